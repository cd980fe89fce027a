package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strings"
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
	// CLIENT LIST gives a TLS client its socket's fd, as Redis does.
	if _, err := c.Write(encode("CLIENT", "INFO")); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || strings.Contains(line, " fd=-1 ") || !strings.Contains(line, " fd=") {
		t.Errorf("CLIENT INFO of a TLS client: %q (%v)", line, err)
	}
}

// TestTLSRefusal: a TLS client that protected mode refuses is closed at once without a
// handshake, so one that connects and sends nothing cannot hold up the accepting of everyone
// else; with verified client certificates required, TLS clients count as authenticated and
// protected mode lets them in from anywhere.
func TestTLSRefusal(t *testing.T) {
	up := redistest.Start(t)
	pki := tlstest.Write(t, t.TempDir())
	for _, verified := range []bool{false, true} {
		base := &tls.Config{MinVersion: tls.VersionTLS12}
		if verified {
			base.ClientAuth = tls.RequireAndVerifyClientCert
		}
		r, err := tlsfiles.New(tlsfiles.Files{Cert: pki.Cert, Key: pki.Key, CA: pki.CA}, base)
		if err != nil {
			t.Fatal(err)
		}
		s := startProxy(t, up, func(o *Options) {
			o.TLSListen, o.ClientTLS, o.ClientTLSVerified, o.Protected = "127.0.0.1:0", r.Config(), verified, "yes"
		})
		d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		if !verified {
			silent, err := d.Dial("tcp", s.TLSAddr().String()) // connects, never says hello
			if err != nil {
				t.Fatal(err)
			}
			defer silent.Close()
			_ = silent.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err := silent.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("a refused TLS client: read %d bytes, err %v; want closed", n, err)
			}
			c := dialRaw(t, s.Addr().String())
			if got := c.do("PING"); got != "+PONG\r\n" {
				t.Errorf("a plain client after the refused one: %q", got)
			}
			continue
		}
		tc, err := tls.DialWithDialer(&d, "tcp", s.TLSAddr().String(), pki.ClientConfig(true))
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := tc.Write(encode("PING")); err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(tc).ReadString('\n'); err != nil || line != "+PONG\r\n" {
			t.Errorf("a verified TLS client from 127.0.0.2: %q %v", line, err)
		}
	}
}
