package proxy

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessionproxy/sessionproxy/internal/promtest"
	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/rewrite"
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

// TestRepairMetrics: SESSIONS.CHECK and REINDEX count their runs and what their reports found
// wrong (REINDEX: before fixing it) in sessionproxy_index_*.
func TestRepairMetrics(t *testing.T) {
	up := redistest.Start(t)
	reg := prometheus.NewRegistry()
	s := startProxy(t, up, func(o *Options) {
		o.Registerer = reg
		o.Repair = func(_ context.Context, _, _ int, fix bool) (rewrite.Report, error) {
			rep := rewrite.Report{Rule: "session", Scanned: 10, Missing: 3, Stale: 2, Orphans: 1}
			if fix {
				rep.Fixed = 5
			}
			return rep, nil
		}
	})
	c := dialRaw(t, s.Addr().String())
	c.do("SESSIONS.CHECK")
	c.do("SESSIONS.REINDEX", "session")
	for _, m := range []struct {
		name, label string
		want        float64
	}{
		{"sessionproxy_index_repairs_total", "mode=check", 1},
		{"sessionproxy_index_repairs_total", "mode=reindex", 1},
		{"sessionproxy_index_repair_found_total", "kind=missing", 6},
		{"sessionproxy_index_repair_found_total", "kind=stale", 4},
		{"sessionproxy_index_repair_found_total", "kind=orphans", 2},
		{"sessionproxy_index_repair_fixed_total", "", 5},
	} {
		var labels []string
		if m.label != "" {
			labels = append(labels, m.label)
		}
		if got, _, err := promtest.Sum(reg, m.name, labels...); err != nil || got != m.want {
			t.Errorf("%s{%s} = %v (%v), want %v", m.name, m.label, got, err, m.want)
		}
	}
}
