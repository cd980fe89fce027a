package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestUpstreamErrorsNameNoAddress: when Redis cannot be reached, the client's error says why
// (the connection was refused) but not where Redis is (issue 14: internal addresses leaked).
func TestUpstreamErrorsNameNoAddress(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up)
	up.Stop()
	// Until the proxy has seen its shared connection end, a command may still go on it and
	// meet the end ("connection lost: ... EOF"); then it dials, and the dial is refused. No
	// reply on the way may name an address.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := dialRaw(t, p.Addr().String()).do("GET", "k")
		if !strings.HasPrefix(got, "-ERR upstream") {
			t.Fatalf("reply with Redis down: %q", got)
		}
		if strings.Contains(got, "127.0.0.1") || strings.Contains(got, up.Addr()) {
			t.Fatalf("the reply names an address: %q", got)
		}
		if strings.Contains(got, "connection refused") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refused dial within 5 s; last reply %q", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
