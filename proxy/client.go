package proxy

import (
	"bytes"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/resp"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// client is the proxy's state for one client connection. Everything but ded is owned by the
// connection's redcon goroutine.
type client struct {
	s     *Server
	rc    redcon.Conn
	nc    net.Conn   // the normalizing wrapper; the dedicated relay writes replies here
	conn  *resp.Conn // the same, typed (nil in tests that serve other conns)
	id    uint64
	ident identity
	db    int
	resp3 bool // the client switched to RESP3 with HELLO 3
	name  string
	pool  *pool     // cached pool for (ident, db); nil after either changes
	ix    *indexSet // the index rules the current batch runs under (Server.idx at its start)
	// centries, cparts: a cluster-mode batch's plan (cluster.go), reused across batches.
	centries []centry
	cparts   []cpart
	tx       *clusterTx // cluster mode: a MULTI being queued by the proxy
	wrote    []string   // cluster mode: nodes sent commands since the last WAIT
	authed   bool       // gave Options.ClientPassword (or none is asked)
	node     string     // cluster mode: the node the client's dedicated connection goes to
	creplies [][]byte   // cluster mode: the parts' replies, and the batch by node (reused)
	cnodes   []string
	cbyNode  [][]int
	creqs    []*request
	merged   []byte
	// acl: where the client's ACL user may run the index scripts (aclCheck); elsewhere its
	// session writes pass plain and unindexed.
	acl aclVerdict

	req     request
	batch   []redcon.Command
	written int         // reply bytes of the current batch, counted into the metric once per batch
	parts   []replyPart // reused by writeParts
	closing bool
	// gated: the batch is in the server's orderGate until its first command is handed
	// upstream; gateCh wakes it there.
	gated  bool
	gateCh chan struct{}

	// Session writes and SESSIONS commands of the current batch, found while routing and
	// turned into script calls when their shared run is sent.
	pending []pendingRewrite
	refs    []rewrite.Ref // backing store of every pending write's refs
	scripts []int         // batch positions of the client's own script calls
	// Per shared run: the upstream commands and what each stands for.
	up      []redcon.Command
	spans   []span
	arena   []byte // bytes of the script calls in up (Raw points here once it stops growing)
	writes  []rewrite.Writes
	reqEnds []int // where each upstream request of the run ends in up (requestEnds)
	// Replies of a shared run, gathered over its upstream requests.
	acc     []byte
	accEnds []int

	ded atomic.Pointer[dedicated] // set once the client moved to its own upstream connection

	info clientInfo // what CLIENT LIST shows of it (cmd_client.go)
	// state: between batches, in one, or ended by the idle timeout (watchIdle). idleIO and
	// idleAt are watchIdle's: the connection's activity count when it last changed, and when
	// that was (unix ns).
	state  atomic.Int32
	idleIO uint64
	idleAt int64
}

// pendingRewrite is a command of the batch to be sent as a script call.
type pendingRewrite struct {
	idx              int // in the batch
	refStart, refEnd int // its refs in client.refs (apply)
	sessions         bool
	rule             int // SESSIONS commands: the rule named
}

// span is what one upstream command of a shared run stands for.
type span struct {
	n      int  // client commands (more than one: a merged apply_many call)
	script bool // a script call, retried after a NOSCRIPT
	a, b   int  // script call bytes in arena
	merged bool
	busy   bool // a client's script call (EVAL, FCALL...): see sharedConn.scripts
	info   bool // INFO of the default sections: the proxy's own is added (cmd_info.go)
}

func newClient(s *Server, rc redcon.Conn, id uint64) *client {
	c := &client{s: s, rc: rc, nc: rc.NetConn(), id: id, ident: s.anonID, acl: aclAllowed,
		authed: s.clientPassword() == "",
		req:    request{done: newDone()}, gateCh: make(chan struct{}, 1)}
	c.conn, _ = c.nc.(*resp.Conn)
	c.req.handoff = c.handedOff
	c.req.sink = c.writeParts
	c.req.overflow = c.overflow
	return c
}

// run carries out one batch: the commands that arrived together. Consecutive shared-route
// commands go upstream in one write (session writes among them rewritten into script calls); a
// local command is answered in its place in the order; a command that needs connection state
// moves the client, with the rest of the batch, to a dedicated upstream connection.
func (c *client) run(cmds []redcon.Command) {
	if c.closing {
		return
	}
	if !c.authed {
		if cmds = c.authGate(cmds); len(cmds) == 0 {
			return
		}
	}
	if dl := c.s.deny.Load(); dl.active() {
		c.denyIn(dl, cmds)
	}
	if d := c.ded.Load(); d != nil {
		d.forward(cmds)
		return
	}
	if c.s.cluster != nil {
		c.runCluster(cmds)
		return
	}
	c.pending, c.refs, c.scripts = c.pending[:0], c.refs[:0], c.scripts[:0]
	start := 0 // first command of the pending shared run
	for i := range cmds {
		args := cmds[i].Args
		spec := c.s.table.lookup(args[0])
		c.s.m.commands[spec.idx].Inc()
		r := spec.routeOf(args)
		if spec.script {
			c.scripts = append(c.scripts, i)
		}
		if r == routeShared && (spec.plan != nil || spec.sessions) {
			if errReply := c.planRewrite(i, spec, args); errReply != nil {
				c.sendShared(cmds[start:i], start)
				if c.closing {
					return
				}
				c.write(errReply)
				start = i + 1
				continue
			}
		}
		switch r {
		case routeShared:
			continue
		case routeLocal:
			c.sendShared(cmds[start:i], start)
			if c.closing {
				return
			}
			spec.local(c, args)
			start = i + 1
			if !c.authed { // RESET logged the client out: the rest waits for its AUTH
				c.run(cmds[start:])
				return
			}
		case routeDedicated:
			c.sendShared(cmds[start:i], start)
			if !c.closing {
				c.toDedicated(cmds[i:])
			}
			return
		}
		if c.closing {
			return
		}
	}
	c.sendShared(cmds[start:], start)
}

// forgetBatch drops the references the client's reused slices hold into the batch just
// handled (and so into redcon's read buffers), so that a large batch does not stay pinned.
func (c *client) forgetBatch() {
	clear(c.batch)
	clear(c.refs)
	clear(c.writes)
}

// planRewrite records command i for rewriting if it is a session write or a SESSIONS command;
// an error reply means the proxy answers it instead (unknown rule).
func (c *client) planRewrite(i int, spec *cmdSpec, args [][]byte) []byte {
	s := c.s
	if spec.sessions {
		r, errReply := c.ix.sessionsRule(args)
		if errReply != nil {
			return errReply
		}
		c.pending = append(c.pending, pendingRewrite{idx: i, sessions: true, rule: r})
		return nil
	}
	if !c.mayRewrite() {
		return nil
	}
	from := len(c.refs)
	c.refs = spec.plan(c.ix.schema, c.refs, args)
	if len(c.refs) == from {
		return nil
	}
	if len(args) > rewrite.MaxArgs || !c.acl.shared {
		c.refs = c.refs[:from]
		s.unindexedWrite(spec, len(args), c.ident)
		return nil
	}
	s.noteUnindexable(c.ix.schema, spec, c.refs[from:])
	c.pending = append(c.pending, pendingRewrite{idx: i, refStart: from, refEnd: len(c.refs)})
	return nil
}

// noteUnindexable counts (and logs) the planned writes that name an owner a global-zset index
// cannot score: the write still runs, and the script leaves its session out of the index.
// Owners the proxy cannot see before the write (JSON values, renames) are not counted here.
func (s *Server) noteUnindexable(sch *rewrite.Schema, spec *cmdSpec, refs []rewrite.Ref) {
	for _, r := range refs {
		if r.Owner != nil && sch.Rules[r.Rule].Layout == rewrite.LayoutGlobalZSet &&
			!rewrite.NumericUID(string(r.Owner)) {
			s.unindexed("session owner is not a number; left out of the global-zset index",
				"cmd", spec.name, "key", string(r.Key), "owner", string(r.Owner))
		}
	}
}

// unindexedWrite counts and logs a session write passed on plain: too long for a script, or
// from a client whose ACL user may not run the scripts.
func (s *Server) unindexedWrite(spec *cmdSpec, nargs int, id identity) {
	if nargs > rewrite.MaxArgs {
		s.unindexed("session write too long to rewrite; left to repair", "cmd", spec.name, "args", nargs)
	} else {
		s.unindexed("session write of an ACL user that may not run the index scripts; left to repair",
			"cmd", spec.name, "user", id.user)
	}
}

// unindexed counts a session write left unindexed and logs it, at most one line a second.
func (s *Server) unindexed(msg string, args ...any) {
	s.m.unindexed.Inc()
	now, last := time.Now().UnixNano(), s.lastUnindexedLog.Load()
	if now-last >= int64(time.Second) && s.lastUnindexedLog.CompareAndSwap(last, now) {
		s.log.Warn(msg, args...)
	}
}

// rewrite appends the script call replacing a session write or SESSIONS command to dst (the
// dedicated path: by body, one reply per command); dst comes back unchanged if the command
// touches no session key. An error reply means the proxy answers the command instead.
func (s *Server) rewrite(dst []byte, spec *cmdSpec, args [][]byte, c *client) ([]byte, []byte) {
	if s.cluster != nil && s.cluster.opts.Index != nil {
		return s.clusterRewriteDedicated(dst, spec, args, c)
	}
	if spec.sessions {
		r, errReply := c.ix.sessionsRule(args)
		if errReply != nil {
			return dst, errReply
		}
		s.m.rewrites.WithLabelValues("sessions").Inc()
		return c.ix.appendSessionsCall(dst, spec, args, r, true), nil
	}
	if !c.mayRewrite() {
		return dst, nil
	}
	c.refs = spec.plan(c.ix.schema, c.refs[:0], args)
	if len(c.refs) == 0 {
		return dst, nil
	}
	if len(args) > rewrite.MaxArgs || !c.acl.dedicated {
		s.unindexedWrite(spec, len(args), c.ident)
		return dst, nil
	}
	s.noteUnindexable(c.ix.schema, spec, c.refs)
	s.m.rewrites.WithLabelValues("apply").Inc()
	return c.ix.schema.AppendApply(dst, &c.ix.scripts.Apply, true, c.refs, args), nil
}

// sendShared runs cmds (batch positions base...) over the client's shared upstream connection
// and writes their replies. Session writes among them become script calls; a run of several
// consecutive ones becomes one apply_many call whose array reply is unpacked into their replies.
func (c *client) sendShared(cmds []redcon.Command, base int) {
	if len(cmds) == 0 {
		return
	}
	c.buildRun(cmds, base)
	c.acc, c.accEnds = c.acc[:0], c.accEnds[:0]
	c.reqEnds = requestEnds(c.reqEnds[:0], c.up, c.spans)
	from := 0
	for _, to := range c.reqEnds {
		if !c.sendChunk(c.up[from:to], len(cmds)) {
			return
		}
		from = to
	}
	clear(c.up)
	c.writeReplies()
	if cap(c.acc) > 1<<20 || cap(c.req.reply) > 1<<20 {
		c.acc, c.req.reply = nil, nil // a huge reply once (or a cut one) should not pin its buffers forever
	}
}

// requestEnds splits a shared run (up, with what each command stands for in spans) into
// upstream requests and appends where each ends (exclusive index into up) to dst. A request ends
// at the run's first script call: if the script cache was emptied behind the proxy's back
// (SCRIPT FLUSH), that call meets NOSCRIPT with nothing after it run yet, and is retried in its
// place. Once it has run, the scripts are there and the rest of the run goes up in one more
// request, unless the run itself sends a SCRIPT command: the next script call after it ends a
// request again. So a run is at most two round trips, one when its script calls come last (a
// run of session writes is merged into one call).
func requestEnds(dst []int, up []redcon.Command, spans []span) []int {
	probe := true // the next script call ends its request
	for i := range up {
		switch {
		case spans[i].script && probe:
			probe = false
		case i == len(up)-1:
		case len(up[i].Args) > 0 && equalFold(up[i].Args[0], "SCRIPT"):
			probe = true
			continue
		default:
			continue
		}
		dst = append(dst, i+1)
	}
	return dst
}

// sendChunk runs one upstream request and appends its replies to c.acc. On failure the
// client has been answered with errors for all n commands of the batch run and is closing.
func (c *client) sendChunk(up []redcon.Command, n int) bool {
	req := &c.req
	req.script = false
	first := len(c.accEnds) // up[i] is span first+i
	for i := range up {
		req.script = req.script || c.spans[first+i].busy
	}
	req.stream = c.mayStream()
	req.limit = c.s.lim().OutputBufferLimit
	u, err := c.doShared(up)
	if req.stream {
		c.writeParts() // those handed over at the end, or while the request was held
		for range req.streamed {
			c.accEnds = append(c.accEnds, len(c.acc)) // written: an empty reply (writeReplies)
		}
		req.stream = false
	}
	if err != nil {
		c.failRun(n, err)
		return false
	}
	for i := range up {
		if c.spans[first+i].script {
			c.retryNoScript(u, up[i], i)
		}
	}
	base := len(c.acc)
	c.acc = append(c.acc, req.reply...)
	for _, e := range req.ends {
		c.accEnds = append(c.accEnds, base+e)
	}
	return true
}

// maxMoves bounds how often one request follows a busy script's connection to its replacement.
// Redis runs one script at a time and answers -BUSY to script calls meanwhile, so a second
// move is already rare.
const maxMoves = 8

// doShared runs cmds as c.req over the client's shared connection; c.req holds the replies.
func (c *client) doShared(cmds []redcon.Command) (*sharedConn, error) {
	req := &c.req
	req.cmds = cmds
	defer func() { req.cmds, req.script = nil, false }()
	for attempt, moves := 0, 0; ; {
		u, err := c.sharedConn()
		if err != nil {
			return nil, err
		}
		switch err := u.do(req); {
		case err == errMoved && moves < maxMoves:
			moves++ // it waited behind a busy script: go on the replacement connection
			continue
		case err == errNotSent && attempt == 0:
			attempt++ // the connection died while idle; nothing was sent, so dial again
			continue
		case err != nil:
			return nil, ErrUpstreamLost
		}
		req.fillLost()
		c.s.slow.note(c, cmds, req.rtt)
		return u, nil
	}
}

// writeReplies writes the replies gathered in c.acc, one per client command: a merged call's
// array reply is unpacked into its elements.
func (c *client) writeReplies() {
	for i := range c.accEnds {
		sp := c.spans[i]
		reply := c.acc[c.accStart(i):c.accEnds[i]]
		if len(reply) == 0 {
			continue // streamed: written already (stream.go)
		}
		if reply[0] == '-' && bytes.HasPrefix(reply, readonlyPrefix) {
			c.s.upstreamReadonly()
		}
		switch {
		case sp.info:
			c.write(c.s.withProxySection(reply))
		case !sp.merged:
			c.write(reply)
		case reply[0] == '*':
			c.write(reply[bytes.IndexByte(reply, '\n')+1:]) // the elements are the replies
		default: // the call failed as a whole (e.g. OOM, BUSY): each write gets its error
			for range sp.n {
				c.write(reply)
			}
		}
	}
}

// failRun answers a run whose upstream failed: replies already received for its earlier
// chunks are delivered, then errors for the rest.
func (c *client) failRun(n int, err error) {
	done := 0
	for i := range c.accEnds {
		done += c.spans[i].n
	}
	c.writeReplies()
	c.fail(n-done, err)
}

// accStart is where upstream command i's reply starts in c.acc.
func (c *client) accStart(i int) int {
	if i == 0 {
		return 0
	}
	return c.accEnds[i-1]
}

// buildRun fills c.up and c.spans for cmds: commands pass as they are, pending rewrites become
// script calls, consecutive session writes in this DB are merged into one call.
func (c *client) buildRun(cmds []redcon.Command, base int) {
	s := c.s
	c.up, c.spans, c.arena = c.up[:0], c.spans[:0], c.arena[:0]
	p, q := 0, 0
	for p < len(c.pending) && c.pending[p].idx < base {
		p++
	}
	for q < len(c.scripts) && c.scripts[q] < base {
		q++
	}
	for j := 0; j < len(cmds); j++ {
		if p >= len(c.pending) || c.pending[p].idx != base+j {
			busy := q < len(c.scripts) && c.scripts[q] == base+j
			if busy {
				q++
			}
			c.up = append(c.up, cmds[j])
			c.spans = append(c.spans, span{n: 1, busy: busy, info: fullInfo(cmds[j].Args)})
			continue
		}
		pr := c.pending[p]
		a := len(c.arena)
		if pr.sessions {
			c.arena = c.ix.appendSessionsCall(c.arena, s.table.lookup(cmds[j].Args[0]), cmds[j].Args, pr.rule, false)
			s.m.rewrites.WithLabelValues("sessions").Inc()
			c.up = append(c.up, redcon.Command{})
			c.spans = append(c.spans, span{n: 1, script: true, a: a, b: len(c.arena)})
			p++
			continue
		}
		// A run: this write and the session writes right after it, all in the current DB.
		c.writes = c.writes[:0]
		for p < len(c.pending) && c.pending[p].idx == base+j && !c.pending[p].sessions {
			refs := c.refs[c.pending[p].refStart:c.pending[p].refEnd]
			if len(c.writes) > 0 && !currentDB(refs) {
				break
			}
			c.writes = append(c.writes, rewrite.Writes{Refs: refs, Args: cmds[j].Args})
			p, j = p+1, j+1
			if !currentDB(refs) {
				break // MOVE/COPY to another DB SELECTs it: nothing may follow in the same call
			}
		}
		j-- // the loop's j++ moves past the run
		s.m.rewrites.WithLabelValues("apply").Add(float64(len(c.writes)))
		if len(c.writes) == 1 {
			w := c.writes[0]
			c.arena = c.ix.schema.AppendApply(c.arena, &c.ix.scripts.Apply, false, w.Refs, w.Args)
		} else {
			c.arena = c.ix.schema.AppendApplyMany(c.arena, &c.ix.scripts.ApplyMany, c.writes)
		}
		c.up = append(c.up, redcon.Command{})
		c.spans = append(c.spans, span{n: len(c.writes), script: true, a: a, b: len(c.arena), merged: len(c.writes) > 1})
	}
	for i, sp := range c.spans { // the arena has stopped growing: point the calls at it
		if sp.script {
			c.up[i].Raw = c.arena[sp.a:sp.b]
		}
	}
}

// currentDB reports whether every ref is in the client's current DB.
func currentDB(refs []rewrite.Ref) bool {
	for _, r := range refs {
		if r.DB != rewrite.CurrentDB {
			return false
		}
	}
	return true
}

var noScript = []byte("-NOSCRIPT")

// retryNoScript handles a script cache emptied behind the proxy's back (SCRIPT FLUSH): if the
// script call at index i of the request met NOSCRIPT, it did nothing, so it is run again after
// reloading the scripts and its reply replaced. When the call ends its request (the first of a
// run) nothing after it has run yet; a later call meets NOSCRIPT only if the cache was emptied
// within the round trip since, and then the commands after it in the request ran first.
func (c *client) retryNoScript(u *sharedConn, call redcon.Command, i int) {
	req := &c.req
	if !bytes.HasPrefix(req.reply[req.replyStart(i):req.ends[i]], noScript) {
		return
	}
	c.s.m.noScriptRetries.Inc()
	load := &request{done: newDone(), cmds: c.ix.loadCmds}
	retry := &request{done: newDone(), cmds: []redcon.Command{call}}
	if u.do(load) != nil || load.err != nil || u.do(retry) != nil || retry.err != nil {
		return // the connection died; the NOSCRIPT error stands
	}
	req.replaceReply(i, retry.reply)
}

func (c *client) sharedConn() (*sharedConn, error) {
	if c.pool == nil {
		p, err := c.s.pools.get(c.key())
		if err != nil {
			return nil, err
		}
		c.pool = p
	}
	if c.gated {
		return c.pool.leastRecent(c.s.ctx, c.id)
	}
	return c.pool.pick(c.s.ctx, c.id)
}

// write queues reply bytes for the client; redcon flushes them once per batch.
func (c *client) write(b []byte) {
	c.rc.WriteRaw(b)
	c.written += len(b)
}

// fail answers n commands with an upstream error and closes the client after them: its
// upstream cannot be reached, and a clear error beats a hanging connection.
func (c *client) fail(n int, err error) {
	c.s.m.errors.WithLabelValues(errKindUpstream).Inc()
	c.s.log.Debug("upstream failure", "client", c.id, "err", err)
	c.write(appendLostReplies(nil, n, err))
	if !transient(err) {
		c.close()
	}
}

// transient reports whether err is Redis refusing a new connection's setup only for now
// (-BUSY while a script runs, -LOADING): its reply answers the commands, as Redis would answer
// them, and the client stays.
func transient(err error) bool {
	var re *replyError
	return errors.As(err, &re) && (bytes.HasPrefix(re.raw, []byte("-BUSY")) || bytes.HasPrefix(re.raw, []byte("-LOADING")))
}

// close flushes what was written and closes the connection after the current batch.
func (c *client) close() {
	c.closing = true
	c.rc.Close()
}

// key is the upstream connection state the client's commands need.
func (c *client) key() poolKey { return poolKey{id: c.ident, db: c.db, resp3: c.resp3, node: c.node} }

// setIdentity switches the ACL user the client's commands run as, with what it may do.
func (c *client) setIdentity(id identity, acl aclVerdict) {
	c.ident, c.pool, c.acl = id, nil, acl
}

// release frees what the client holds upstream; called once the connection has closed.
func (c *client) release() {
	if d := c.ded.Load(); d != nil {
		d.close()
	}
}
