package main

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestMetrics: after known traffic, /metrics shows the command counters and connection gauges
// with exactly the values that traffic implies (the proxy is fresh and the harness sends no
// commands of its own).
func TestMetrics(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr())

	setter := dialRESP(t, p.Addr)
	var req []byte
	for i := range 10 {
		req = append(req, encode("SET", fmt.Sprintf("m:%d", i), "v")...)
	}
	setter.send(req)
	for i := range 10 {
		if r, err := setter.reply(5 * time.Second); err != nil || r != "+OK\r\n" {
			t.Fatalf("SET %d: %q, %v", i, r, err)
		}
	}
	getter := dialRESP(t, p.Addr)
	for range 5 {
		getter.do("GET", "m:1")
	}
	getter.do("NOSUCHCOMMAND")
	subscriber := dialRESP(t, p.Addr)
	if r := subscriber.do("SUBSCRIBE", "m:chan"); !strings.HasPrefix(r, "*3\r\n$9\r\nsubscribe\r\n") {
		t.Fatalf("SUBSCRIBE: %q", r)
	}

	want := map[string]float64{
		`sessionproxy_client_commands_total{cmd="set"}`:       10,
		`sessionproxy_client_commands_total{cmd="get"}`:       5,
		`sessionproxy_client_commands_total{cmd="subscribe"}`: 1,
		`sessionproxy_client_commands_total{cmd="other"}`:     1,
		`sessionproxy_client_connections`:                     3,
		`sessionproxy_client_accepted_connections_total`:      3,
		`sessionproxy_upstream_dedicated_connections`:         1,
	}
	check := func(want map[string]float64) []string {
		m := scrapeMetrics(t, p.HTTP)
		var bad []string
		for k, v := range want {
			if got, ok := m[k]; !ok || got != v {
				bad = append(bad, fmt.Sprintf("%s = %v (present %v), want %v", k, got, ok, v))
			}
		}
		return bad
	}
	var bad []string
	if !waitFor(5*time.Second, func() bool { bad = check(want); return len(bad) == 0 }) {
		t.Errorf("metrics after traffic:\n%s", strings.Join(bad, "\n"))
	}
	m := scrapeMetrics(t, p.HTTP)
	for _, k := range []string{
		`sessionproxy_client_read_bytes_total`, `sessionproxy_client_written_bytes_total`,
		`sessionproxy_upstream_dials_total`, `sessionproxy_upstream_roundtrip_seconds_count`,
	} {
		if m[k] <= 0 {
			t.Errorf("%s = %v, want > 0", k, m[k])
		}
	}

	// Bytes relayed on a dedicated connection (a published message) count as written too.
	const written = `sessionproxy_client_written_bytes_total`
	w0 := m[written]
	if r := getter.do("PUBLISH", "m:chan", "hello"); r != ":1\r\n" {
		t.Fatalf("PUBLISH: %q", r)
	}
	msg := "*3\r\n$7\r\nmessage\r\n$6\r\nm:chan\r\n$5\r\nhello\r\n"
	if r, err := subscriber.reply(5 * time.Second); err != nil || r != msg {
		t.Fatalf("message: %q, %v", r, err)
	}
	wantW := w0 + float64(len(":1\r\n")+len(msg))
	if !waitFor(5*time.Second, func() bool { return scrapeMetrics(t, p.HTTP)[written] >= wantW }) {
		t.Errorf("%s = %v after a PUBLISH and its message, want >= %v", written, scrapeMetrics(t, p.HTTP)[written], wantW)
	}

	// Clients leaving bring the gauges down.
	subscriber.close()
	getter.close()
	after := map[string]float64{
		`sessionproxy_client_connections`:                1,
		`sessionproxy_client_accepted_connections_total`: 3,
		`sessionproxy_upstream_dedicated_connections`:    0,
	}
	if !waitFor(5*time.Second, func() bool { bad = check(after); return len(bad) == 0 }) {
		t.Errorf("metrics after two clients left:\n%s", strings.Join(bad, "\n"))
	}

	// A client that leaves with QUIT from its dedicated connection (Redis closes it) is not an
	// upstream failure.
	quitter := dialRESP(t, p.Addr)
	for _, cmd := range [][]string{{"MULTI"}, {"DISCARD"}, {"QUIT"}} {
		if r := quitter.do(cmd...); r != "+OK\r\n" {
			t.Fatalf("%v: %q", cmd, r)
		}
	}
	afterQuit := map[string]float64{
		`sessionproxy_client_connections`:             1,
		`sessionproxy_upstream_dedicated_connections`: 0,
	}
	if !waitFor(5*time.Second, func() bool { bad = check(afterQuit); return len(bad) == 0 }) {
		t.Errorf("metrics after a QUIT:\n%s", strings.Join(bad, "\n"))
	}
	const upstreamErrs = `sessionproxy_client_errors_total{kind="upstream"}`
	if got := scrapeMetrics(t, p.HTTP)[upstreamErrs]; got != 0 {
		t.Errorf("%s = %v after clients left, one with QUIT; want 0", upstreamErrs, got)
	}
}

// TestProfilesOnAdminOnly: /debug/pprof is not on the metrics listener, and served by the admin
// listener only when one is configured.
func TestProfilesOnAdminOnly(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up.Addr())
	if code, _, err := httpGet(p.HTTP, "/debug/pprof/"); err != nil || code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ on the metrics listener: %d %v, want 404", code, err)
	}
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(redistest.FreePort(t)))
	q := startProxy(t, up.Addr(), "SESSIONPROXY_ADMIN="+admin)
	if code, body, err := httpGet(admin, "/debug/pprof/"); err != nil || code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ on the admin listener: %d %v", code, err)
	}
	if code, _, _ := httpGet(q.HTTP, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ on the metrics listener with an admin one: %d, want 404", code)
	}
}
