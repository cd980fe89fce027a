package proxy

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

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
	// MULTI gave the client a connection of its own: there INFO gets the section too, in a
	// pipeline, counted among the other replies.
	c.send(append(append(append(encode("PING"), encode("INFO")...), encode("GET", "k")...), encode("info", "all")...))
	got = string(c.replies(4))
	if strings.Count(got, "\r\n\r\n# Proxy\r\n") != 2 || !strings.HasPrefix(got, "+PONG\r\n$") {
		t.Errorf("INFO on a connection of its own: the proxy's section twice wanted: %q", got[:min(len(got), 200)])
	}
	for _, part := range strings.Split(got, "reaper_leading:1\r\n\r\n")[:2] {
		i := strings.LastIndex(part, "$")
		n := strings.Index(part[i:], "\r\n")
		if want := strconv.Itoa(len(part[i+n+2:]) + len("reaper_leading:1\r\n")); part[i+1:i+n] != want {
			t.Errorf("INFO reply length %s, want %s", part[i+1:i+n], want)
		}
	}
}

// TestRepairMetrics: SESSIONS.CHECK and REINDEX count their runs and what their reports found
// wrong (REINDEX: before fixing it) in sessionproxy_index_*.
func TestRepairMetrics(t *testing.T) {
	up := redistest.Start(t)
	reg := prometheus.NewRegistry()
	s := startProxy(t, up, func(o *Options) {
		o.Registerer = reg
		o.Repair = func(_ context.Context, _ *rewrite.Schema, _, _ int, fix bool) (rewrite.Report, error) {
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

// TestProxySlowlog: PROXY SLOWLOG keeps the shared-path commands whose round trip to Redis took
// the threshold or longer (here: SETs held by CLIENT PAUSE WRITE), newest first, in Redis'
// SLOWLOG GET format, at most SlowLogMaxLen of them; LEN and RESET as Redis'.
func TestProxySlowlog(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up, func(o *Options) { o.SlowLogSlowerThan, o.SlowLogMaxLen = 30*time.Millisecond, 2 })
	c := dialRaw(t, s.Addr().String())
	c.do("SET", "fast", "v")
	c.do("GET", "fast")
	if got := c.do("PROXY", "SLOWLOG", "LEN"); got != ":0\r\n" {
		t.Fatalf("fast commands logged: LEN %q", got)
	}
	for i := range 3 {
		if _, err := up.Do("CLIENT", "PAUSE", "60", "WRITE"); err != nil {
			t.Fatal(err)
		}
		if got := c.do("SET", "slow"+strconv.Itoa(i), strings.Repeat("x", 200)); got != "+OK\r\n" {
			t.Fatalf("SET: %q", got)
		}
	}
	if got := c.do("PROXY", "SLOWLOG", "LEN"); got != ":2\r\n" {
		t.Fatalf("LEN %q, want 2 (max_len)", got)
	}
	got := c.do("PROXY", "SLOWLOG", "GET")
	addr := c.nc.LocalAddr().String()
	// Newest first: ids 2 and 1, each *6 id time micros *3 args addr name.
	entry := regexp.MustCompile(`^\*6\r\n:(\d+)\r\n:\d+\r\n:(\d+)\r\n\*3\r\n\$3\r\nSET\r\n\$5\r\n(slow\d)\r\n\$147\r\nx{128}\.\.\. \(72 more bytes\)\r\n\$\d+\r\n` +
		regexp.QuoteMeta(addr) + `\r\n\$0\r\n\r\n`)
	rest, ok := strings.CutPrefix(got, "*2\r\n")
	for i, want := range []string{"2", "1"} {
		m := entry.FindStringSubmatch(rest)
		if !ok || m == nil {
			t.Fatalf("PROXY SLOWLOG GET: %q", got)
		}
		if micros, _ := strconv.Atoi(m[2]); m[1] != want || m[3] != "slow"+want || micros < 30000 {
			t.Errorf("entry %d: id %s key %s %s µs, want id %s, >= 30000 µs", i, m[1], m[3], m[2], want)
		}
		rest = rest[len(m[0]):]
	}
	if got := c.do("PROXY", "SLOWLOG", "GET", "1"); !strings.HasPrefix(got, "*1\r\n*6\r\n:2\r\n") {
		t.Errorf("GET 1: %q", got)
	}
	if got := c.do("PROXY", "SLOWLOG", "RESET"); got != "+OK\r\n" {
		t.Errorf("RESET: %q", got)
	}
	if got := c.do("PROXY", "SLOWLOG", "LEN"); got != ":0\r\n" {
		t.Errorf("LEN after RESET: %q", got)
	}
	// A session write goes up as a script call: logged as sent, not without arguments.
	if _, err := up.Do("CLIENT", "PAUSE", "60", "WRITE"); err != nil {
		t.Fatal(err)
	}
	if got := c.do("HSET", "session:s1", "userid", "7"); got != ":1\r\n" {
		t.Fatalf("HSET: %q", got)
	}
	if got := c.do("PROXY", "SLOWLOG", "GET", "1"); !strings.Contains(got, "\r\n$7\r\nEVALSHA\r\n") {
		t.Errorf("a slow session write: %q", got)
	}
}
