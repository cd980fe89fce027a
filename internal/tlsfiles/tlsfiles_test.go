package tlsfiles

import (
	"crypto/tls"
	"math/big"
	"net"
	"os"
	"testing"

	"github.com/sessionproxy/sessionproxy/internal/tlsfiles/tlstest"
)

// serial completes a handshake over a pipe and returns the server certificate's serial. The
// server writes a byte once its side succeeded, so a client the server refused (whose own
// TLS 1.3 handshake completes first) fails on reading it.
func serial(t *testing.T, server *tls.Config, client *tls.Config) (*big.Int, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		s := tls.Server(a, server)
		if s.Handshake() == nil {
			_, _ = s.Write([]byte{1})
		}
		a.Close()
	}()
	c := tls.Client(b, client)
	if err := c.Handshake(); err != nil {
		return nil, err
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// TestReload: a renewed certificate is served after Reload (on a change only, unless forced),
// files that do not load leave the last good configuration in place, and client certificates
// are checked against the CA file.
func TestReload(t *testing.T) {
	pki := tlstest.Write(t, t.TempDir())
	r, err := New(Files{Cert: pki.Cert, Key: pki.Key, CA: pki.CA}, &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	srv := r.Config()
	first, err := serial(t, srv, pki.ClientConfig(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := serial(t, srv, pki.ClientConfig(false)); err == nil {
		t.Fatal("a client without a certificate completed the handshake")
	}
	if loaded, err := r.Reload(false); loaded || err != nil {
		t.Fatalf("unchanged files: loaded %v, err %v", loaded, err)
	}
	want := pki.Rotate()
	if loaded, err := r.Reload(false); !loaded || err != nil {
		t.Fatalf("renewed files: loaded %v, err %v", loaded, err)
	}
	got, err := serial(t, srv, pki.ClientConfig(true))
	if err != nil || got.Cmp(want) != 0 || got.Cmp(first) == 0 {
		t.Fatalf("after the renewal: serial %v (err %v), want %v", got, err, want)
	}
	if err := os.WriteFile(pki.Cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if loaded, err := r.Reload(false); loaded || err == nil {
		t.Fatalf("a broken file: loaded %v, err %v", loaded, err)
	}
	if got, err := serial(t, srv, pki.ClientConfig(true)); err != nil || got.Cmp(want) != 0 {
		t.Fatalf("after a broken file: serial %v (err %v), want the last good %v", got, err, want)
	}
	if _, err := New(Files{Cert: pki.Cert, Key: pki.Key}, &tls.Config{MinVersion: tls.VersionTLS12}); err == nil {
		t.Fatal("New accepted a broken certificate file")
	}
}
