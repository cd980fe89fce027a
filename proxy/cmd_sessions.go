package proxy

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/rewrite"
)

// The proxy's own commands for the session index. LIST, COUNT and REVOKE run as one script
// upstream, in the client's place in its pipeline; REINDEX and CHECK walk the DB in bounded
// batches and answer when done.
var sessionsFamily = family{
	{name: "sessions.list", classify: classifySessions, local: cmdSessionsBadArgs, sessions: true},
	{name: "sessions.count", classify: classifySessions, local: cmdSessionsBadArgs, sessions: true},
	{name: "sessions.revoke", classify: classifySessions, local: cmdSessionsBadArgs, sessions: true},
	{name: "sessions.reindex", route: routeLocal, local: cmdSessionsRepair,
		sendDedicated: (*dedicated).sendRepair, drainFirst: true},
	{name: "sessions.check", route: routeLocal, local: cmdSessionsRepair,
		sendDedicated: (*dedicated).sendRepair, drainFirst: true},
	{name: "sessions.help", route: routeLocal, local: cmdSessionsHelp, sendDedicated: (*dedicated).sendSessionsHelp},
}

// sessionsHelp is SESSIONS.HELP's reply, in the style of Redis' own HELP subcommands.
var sessionsHelp = []string{
	"SESSIONS.<subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
	"LIST <uid> [<rule>]",
	"    Live session ids of user <uid>, sorted; stale index entries are repaired on the way.",
	"COUNT <uid> [<rule>]",
	"    Number of live sessions of user <uid>.",
	"REVOKE <uid> [<rule>]",
	"    Delete every session of user <uid> and its index entries atomically; returns how many.",
	"REINDEX [<rule>]",
	"    Rebuild the index of the current DB from the session keys, in bounded batches.",
	"CHECK [<rule>]",
	"    Compare index and sessions of the current DB; report missing and stale entries.",
	"HELP",
	"    Print this help.",
}

// classifySessions: well-formed LIST/COUNT/REVOKE are rewritten to the sessions script and
// share the upstream path; anything else gets the proxy's error reply.
func classifySessions(args [][]byte) route {
	if len(args) == 2 || len(args) == 3 {
		return routeShared
	}
	return routeLocal
}

// sessionsMode maps a SESSIONS command to the sessions script's mode.
func sessionsMode(name string) string { return strings.TrimPrefix(name, "sessions.") }

func cmdSessionsBadArgs(c *client, args [][]byte) {
	c.write(errArity(args[0]))
}

func errArity(name []byte) []byte {
	return []byte("-ERR wrong number of arguments for '" + strings.ToLower(string(name)) + "' command\r\n")
}

func errUnknownRule(name []byte) []byte {
	return []byte("-ERR unknown index rule '" + sanitizeLine(string(name)) + "'\r\n")
}

func cmdSessionsHelp(c *client, _ [][]byte) {
	var b []byte
	b = redcon.AppendArray(b, len(sessionsHelp))
	for _, l := range sessionsHelp {
		b = redcon.AppendString(b, l)
	}
	c.write(b)
}

// cmdSessionsRepair runs SESSIONS.REINDEX / SESSIONS.CHECK over the client's DB.
func cmdSessionsRepair(c *client, args [][]byte) {
	if errReply := c.ownUserOnly(); errReply != nil {
		c.write(errReply)
		return
	}
	c.write(c.s.repairReply(c.db, args))
}

// repairReply runs a repair and renders its report (or error) as a reply.
func (s *Server) repairReply(db int, args [][]byte) []byte {
	rep, errReply := s.runRepair(db, args)
	if errReply != nil {
		return errReply
	}
	return appendReport(nil, rep)
}

// runRepair runs SESSIONS.REINDEX or SESSIONS.CHECK [rule] over db; an error comes back as
// the error reply to send.
func (s *Server) runRepair(db int, args [][]byte) (rewrite.Report, []byte) {
	if len(args) > 2 {
		return rewrite.Report{}, errArity(args[0])
	}
	rule := ""
	if len(args) == 2 {
		rule = string(args[1])
	}
	sch := s.idx.Load().schema // the rule's number and the repair both under these rules
	r, ok := sch.RuleByName(rule)
	if !ok {
		return rewrite.Report{}, errUnknownRule(args[1])
	}
	if s.opts.Repair == nil {
		return rewrite.Report{}, []byte("-ERR index repair is not configured\r\n")
	}
	fix := equalFold(args[0], "SESSIONS.REINDEX")
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	rep, err := s.opts.Repair(ctx, sch, db, r, fix)
	if err != nil {
		return rewrite.Report{}, redcon.AppendError(nil, "ERR "+sanitizeLine(err.Error()))
	}
	s.log.Info("index repair", append([]any{"db", db, "reindex", fix}, rep.Fields()...)...)
	mode := "check"
	if fix {
		mode = "reindex"
	}
	s.m.repairs.WithLabelValues(mode).Inc()
	s.m.repairFound.WithLabelValues("missing").Add(float64(rep.Missing))
	s.m.repairFound.WithLabelValues("stale").Add(float64(rep.Stale))
	s.m.repairFound.WithLabelValues("orphans").Add(float64(rep.Orphans))
	s.m.repairFixed.Add(float64(rep.Fixed))
	return rep, nil
}

// appendReport renders a report as a flat array of names and values (like CONFIG GET).
func appendReport(dst []byte, rep rewrite.Report) []byte {
	f := rep.Fields()
	dst = redcon.AppendArray(dst, len(f))
	for _, v := range f {
		switch v := v.(type) {
		case string:
			dst = redcon.AppendBulkString(dst, v)
		case int:
			dst = redcon.AppendInt(dst, int64(v))
		case int64:
			dst = redcon.AppendInt(dst, v)
		}
	}
	return dst
}

// sessionsRule is the rule a SESSIONS.LIST/COUNT/REVOKE names, or the error reply for an
// unknown one.
func (ix *indexSet) sessionsRule(args [][]byte) (int, []byte) {
	if len(args) < 3 {
		return 0, nil
	}
	r, ok := ix.schema.RuleByName(string(args[2]))
	if !ok {
		return 0, errUnknownRule(args[2])
	}
	return r, nil
}

// appendSessionsCall rewrites SESSIONS.LIST/COUNT/REVOKE of rule r into the sessions script.
func (ix *indexSet) appendSessionsCall(dst []byte, spec *cmdSpec, args [][]byte, r int, byBody bool) []byte {
	sc := &ix.scripts.Sessions
	dst = redcon.AppendArray(dst, 6)
	if byBody {
		dst = redcon.AppendBulkString(dst, "EVAL")
		dst = redcon.AppendBulkString(dst, sc.Body)
	} else {
		dst = redcon.AppendBulkString(dst, "EVALSHA")
		dst = redcon.AppendBulkString(dst, sc.SHA)
	}
	dst = redcon.AppendBulkString(dst, "0")
	dst = redcon.AppendBulkString(dst, sessionsMode(spec.name))
	dst = redcon.AppendBulkString(dst, strconv.Itoa(r+1))
	return redcon.AppendBulk(dst, args[1])
}

// Scripts that make Redis return a reply the proxy composed, so that on a dedicated connection
// (whose replies are relayed as they come) the proxy's own answers keep their place in order.
const (
	echoError  = "return redis.error_reply(ARGV[1])"
	echoStatus = "local t = {} for i, v in ipairs(ARGV) do t[i] = {ok = v} end return t"
	// echoReport: ARGV holds name/value pairs; values that are numbers become integers.
	echoReport = "local t = {} for i, v in ipairs(ARGV) do t[i] = (i % 2 == 0 and tonumber(v)) or v end return t"
)

// appendEcho appends an EVAL of script with args.
func appendEcho(dst []byte, script string, args ...string) []byte {
	dst = redcon.AppendArray(dst, 3+len(args))
	dst = redcon.AppendBulkString(dst, "EVAL")
	dst = redcon.AppendBulkString(dst, script)
	dst = redcon.AppendBulkString(dst, "0")
	for _, a := range args {
		dst = redcon.AppendBulkString(dst, a)
	}
	return dst
}

// appendEchoError appends an EVAL returning the error reply errReply ("-ERR ...\r\n").
func appendEchoError(dst, errReply []byte) []byte {
	return appendEcho(dst, echoError, string(errReply[1:len(errReply)-2]))
}

// appendEchoReport appends an EVAL returning rep as appendReport renders it.
func appendEchoReport(dst []byte, rep rewrite.Report) []byte {
	f := rep.Fields()
	args := make([]string, len(f))
	for i, v := range f {
		args[i] = fmt.Sprint(v)
	}
	return appendEcho(dst, echoReport, args...)
}
