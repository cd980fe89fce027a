package proxy

import (
	"strconv"
	"strings"
	"testing"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestInfoProxy: INFO PROXY is answered by the proxy, in order with Redis' replies, on the
// shared path and inside MULTI; other INFO sections are Redis'.
func TestInfoProxy(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up, func(o *Options) {
		o.Version, o.Mode = "v-test", "standalone"
		o.InfoExtra = func() []string { return []string{"reaper_leading:1"} }
	})
	c := dialRaw(t, s.Addr().String())
	c.send(append(append(encode("PING"), encode("info", "proxy")...), encode("INFO", "server")...))
	got := string(c.replies(3))
	for _, want := range []string{"+PONG\r\n$", "# Proxy\r\nsessionproxy_version:v-test\r\n", "upstream_mode:standalone\r\n",
		"upstream:" + up.Addr() + "\r\n", "upstream_state:up\r\n", "index_rules:session=session:*,", "reaper_leading:1\r\n",
		"# Server\r\n", "redis_version:"} {
		if !strings.Contains(got, want) {
			t.Errorf("replies lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got[strings.Index(got, "# Server"):], "# Proxy") {
		t.Error("INFO server carries the proxy's section")
	}
	for _, args := range [][]string{{"INFO"}, {"info", "everything"}} {
		full := c.do(args...)
		n := strings.Index(full, "\r\n")
		if !strings.Contains(full, "# Server\r\n") || !strings.HasSuffix(full, "index_rules:session=session:*,express=sess:*,scored=zsess:*,global=gsess:*\r\nreaper_leading:1\r\n\r\n") ||
			!strings.Contains(full, "\r\n\r\n# Proxy\r\n") || full[1:n] != strconv.Itoa(len(full)-n-4) {
			t.Errorf("%v: the proxy's section is not added at the end, as a section, with the right length: ...%q", args, full[max(0, len(full)-300):])
		}
	}
	c.send(append(append(append(encode("MULTI"), encode("INFO", "PROXY")...), encode("GET", "k")...), encode("EXEC")...))
	got = string(c.replies(4))
	if !strings.HasPrefix(got, "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$") || !strings.Contains(got, "sessionproxy_version:v-test") {
		t.Errorf("INFO PROXY in MULTI: %q", got)
	}
}
