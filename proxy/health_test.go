package proxy

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/syncbuf"
)

// TestUpstreamOutageLogged: Redis going away is logged once at WARN with the reason, its return
// once at INFO, so an operator sees an outage in the log and not only as client errors.
func TestUpstreamOutageLogged(t *testing.T) {
	up := redistest.Start(t)
	var logs syncbuf.Buffer
	s := startProxy(t, up, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	c := dialRaw(t, s.Addr().String())
	c.do("PING")
	up.Stop()
	for range 3 {
		if got := dialRaw(t, s.Addr().String()).do("PING"); !strings.HasPrefix(got, "-ERR upstream") {
			t.Fatalf("PING with Redis down: %q", got)
		}
	}
	up.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if got := dialRaw(t, s.Addr().String()).do("PING"); got == "+PONG\r\n" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := logs.String()
	if n := strings.Count(out, "upstream unreachable"); n != 1 || !strings.Contains(out, "level=WARN") || !strings.Contains(out, "err=\"upstream unavailable: ") {
		t.Errorf("outage logged %d times (want once, WARN, with the reason):\n%s", n, out)
	}
	if n := strings.Count(out, "upstream reachable again"); n != 1 {
		t.Errorf("recovery logged %d times (want once):\n%s", n, out)
	}
}
