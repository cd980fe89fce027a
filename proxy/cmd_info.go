package proxy

import (
	"fmt"
	"strings"
	"time"

	"github.com/tidwall/redcon"
)

// infoFamily: INFO PROXY (any case) is answered by the proxy with a "# Proxy" section about
// itself; every other INFO goes to Redis.
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
	fmt.Fprintf(&b, "ordering:%s\r\n", [...]string{"none", "arrival", "auto"}[s.opts.Ordering])
	rules := make([]string, len(s.schema.Rules))
	for i, r := range s.schema.Rules {
		rules[i] = r.Name + "=" + r.Pattern
	}
	fmt.Fprintf(&b, "index_rules:%s\r\n", strings.Join(rules, ","))
	return []byte(b.String())
}
