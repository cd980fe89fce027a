package proxy

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/redcon"
)

// infoFamily: INFO PROXY (any case) is answered by the proxy with a "# Proxy" section about
// itself; every other INFO goes to Redis, and INFO of the default sections (no argument,
// default, all, everything) gets the proxy's section added at the end (on the shared path).
var infoFamily = family{
	{name: "info", classify: classifyInfo, local: cmdInfo, sendDedicated: (*dedicated).sendInfo},
}

func classifyInfo(args [][]byte) route {
	if len(args) == 2 && equalFold(args[1], "PROXY") {
		return routeLocal
	}
	return routeShared
}

func cmdInfo(c *client, _ [][]byte) { c.write(c.appendText(nil, c.s.proxyInfo())) }

// sendInfo answers INFO PROXY on a client's own connection, in order with Redis' replies.
func (d *dedicated) sendInfo(cmd redcon.Command) bool {
	if classifyInfo(cmd.Args) != routeLocal {
		return false
	}
	d.out = appendEcho(d.out, echoBulk, string(d.c.s.proxyInfo()))
	return true
}

// proxyInfo is the "# Proxy" INFO section: what the proxy is and where it forwards.
func (s *Server) proxyInfo() []byte {
	mode := s.opts.Mode
	if mode == "" {
		mode = "standalone"
	}
	var b strings.Builder
	b.WriteString("# Proxy\r\n")
	fmt.Fprintf(&b, "sessionproxy_version:%s\r\n", s.opts.Version)
	fmt.Fprintf(&b, "uptime_in_seconds:%d\r\n", int64(time.Since(s.started).Seconds()))
	fmt.Fprintf(&b, "connected_clients:%d\r\n", s.nclients.Load())
	fmt.Fprintf(&b, "dedicated_clients:%d\r\n", s.ndedicated.Load())
	fmt.Fprintf(&b, "upstream_mode:%s\r\n", mode)
	fmt.Fprintf(&b, "upstream:%s\r\n", s.Upstream())
	state := "up"
	if s.dialer.down.Load() {
		state = "down" // the last dial failed: clients get errors until one succeeds
	}
	fmt.Fprintf(&b, "upstream_state:%s\r\n", state)
	fmt.Fprintf(&b, "ordering:%s\r\n", [...]string{"none", "arrival", "auto"}[s.opts.Ordering])
	sch := s.idx.Load().schema
	rules := make([]string, len(sch.Rules))
	for i, r := range sch.Rules {
		rules[i] = r.Name + "=" + r.Pattern
	}
	fmt.Fprintf(&b, "index_rules:%s\r\n", strings.Join(rules, ","))
	if s.opts.InfoExtra != nil {
		for _, l := range s.opts.InfoExtra() {
			b.WriteString(l)
			b.WriteString("\r\n")
		}
	}
	return []byte(b.String())
}

// fullInfo reports whether args is an INFO of the default sections.
func fullInfo(args [][]byte) bool {
	if len(args[0]) != 4 || !equalFold(args[0], "INFO") {
		return false
	}
	return len(args) == 1 || len(args) == 2 && (equalFold(args[1], "DEFAULT") || equalFold(args[1], "ALL") || equalFold(args[1], "EVERYTHING"))
}

// withProxySection adds the proxy's section to Redis' INFO reply (a bulk string, or a verbatim
// string in RESP3), after a blank line as between Redis' own sections. Anything else (an error)
// is returned as it is.
func (s *Server) withProxySection(reply []byte) []byte {
	if len(reply) == 0 || reply[0] != '$' && reply[0] != '=' {
		return reply
	}
	nl := bytes.IndexByte(reply, '\n')
	if nl < 0 || len(reply) < nl+3 {
		return reply
	}
	body := reply[nl+1 : len(reply)-2]
	extra := append([]byte("\r\n"), s.proxyInfo()...)
	out := append([]byte{reply[0]}, strconv.Itoa(len(body)+len(extra))...)
	out = append(out, '\r', '\n')
	out = append(out, body...)
	out = append(out, extra...)
	return append(out, '\r', '\n')
}
