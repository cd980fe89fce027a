package proxy

import (
	"bufio"
	"crypto/tls"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/tlsfiles"
	"github.com/sessionproxy/sessionproxy/internal/tlsfiles/tlstest"
)

// TestTLSOnly: with only a TLS listener (Listen ""), the proxy serves TLS clients there, and the
// order gate (on by default) leaves their connections alone.
func TestTLSOnly(t *testing.T) {
	up := redistest.Start(t)
	pki := tlstest.Write(t, t.TempDir())
	r, err := tlsfiles.New(tlsfiles.Files{Cert: pki.Cert, Key: pki.Key}, &tls.Config{MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	s := startProxy(t, up, func(o *Options) {
		o.Listen, o.TLSListen, o.ClientTLS, o.Ordering = "", "127.0.0.1:0", r.Config(), OrderArrival
	})
	if s.TLSAddr() == nil || s.Addr().String() != s.TLSAddr().String() {
		t.Fatalf("addresses: %v, tls %v", s.Addr(), s.TLSAddr())
	}
	c, err := tls.Dial("tcp", s.TLSAddr().String(), pki.ClientConfig(false))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(append(encode("SET", "k", "v"), encode("GET", "k")...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for _, want := range []string{"+OK\r\n", "$1\r\n", "v\r\n"} {
		if line, err := br.ReadString('\n'); err != nil || line != want {
			t.Fatalf("got %q (%v), want %q", line, err, want)
		}
	}
}
