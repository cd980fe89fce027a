package proxy

import (
	"strings"
	"testing"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestUpstreamErrorsNameNoAddress: when Redis cannot be reached, the client's error says why
// (the connection was refused) but not where Redis is (issue 14: internal addresses leaked).
func TestUpstreamErrorsNameNoAddress(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up)
	up.Stop()
	c := dialRaw(t, p.Addr().String())
	got := c.do("GET", "k")
	if !strings.HasPrefix(got, "-ERR upstream") || !strings.Contains(got, "connection refused") {
		t.Fatalf("reply with Redis down: %q", got)
	}
	if strings.Contains(got, "127.0.0.1") || strings.Contains(got, up.Addr()) {
		t.Errorf("the reply names an address: %q", got)
	}
}
