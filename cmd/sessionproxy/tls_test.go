package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestUpstreamTLSAndUser: the proxy reaches a Redis that only takes TLS clients with a
// certificate (tls-auth-clients yes) and logs in as the configured ACL user; plain traffic,
// session writes (the index scripts) and the repair path all work through it.
func TestUpstreamTLSAndUser(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", nil, nil)
	writeCert(t, dir, "server", ca, caKey)
	writeCert(t, dir, "client", ca, caKey)
	tlsPort := strconv.Itoa(redistest.FreePort(t))
	srv := redistest.Start(t, "--tls-port", tlsPort, "--tls-auth-clients", "yes",
		"--tls-cert-file", filepath.Join(dir, "server.pem"), "--tls-key-file", filepath.Join(dir, "server.key"),
		"--tls-ca-cert-file", filepath.Join(dir, "ca.pem"))
	ctl := dialRESP(t, srv.Addr()) // the plain port, for the test's own checks
	if r := ctl.do("ACL", "SETUSER", "app", "on", ">apppw", "~*", "&*", "+@all"); r != "+OK\r\n" {
		t.Fatalf("ACL SETUSER: %q", r)
	}
	// Clients give the proxy's client password and then run as its user, app.
	p := startProxy(t, net.JoinHostPort("127.0.0.1", tlsPort), "SESSIONPROXY_CLIENTS_PASSWORD=cpw",
		"SESSIONPROXY_UPSTREAM_USERNAME=app", "SESSIONPROXY_UPSTREAM_PASSWORD=apppw",
		"SESSIONPROXY_UPSTREAM_TLS_ENABLED=true",
		"SESSIONPROXY_UPSTREAM_TLS_CA_FILE="+filepath.Join(dir, "ca.pem"),
		"SESSIONPROXY_UPSTREAM_TLS_CERT_FILE="+filepath.Join(dir, "client.pem"),
		"SESSIONPROXY_UPSTREAM_TLS_KEY_FILE="+filepath.Join(dir, "client.key"))
	c := dialRESP(t, p.Addr)
	for _, st := range []struct{ cmd, want string }{
		{"AUTH cpw", "+OK\r\n"},
		{"SET tls:k v", "+OK\r\n"},
		{"GET tls:k", "$1\r\nv\r\n"},
		{"ACL WHOAMI", "$3\r\napp\r\n"},
		{"HSET session:1 userid 7", ":1\r\n"},
		{"SMEMBERS user:7", "*1\r\n$1\r\n1\r\n"},
		{"SESSIONS.LIST 7", "*1\r\n$1\r\n1\r\n"},
	} {
		if got := c.do(strings.Fields(st.cmd)...); got != st.want {
			t.Errorf("%s: %q, want %q", st.cmd, got, st.want)
		}
	}
	if got := c.do("SESSIONS.CHECK"); !strings.HasPrefix(got, "*") {
		t.Errorf("SESSIONS.CHECK: %q", got)
	}
	// Every connection of the proxy's is on the TLS port, as the app user.
	list := ctl.do("CLIENT", "LIST")
	proxied := 0
	for _, line := range strings.Split(list, "\n") {
		// cmd=NULL: a connection still being set up (its AUTH not run yet); cmd=ping as
		// default: the proxy asking whether Redis serves unauthenticated clients.
		if strings.Contains(line, "laddr=127.0.0.1:"+tlsPort+" ") && !strings.Contains(line, " cmd=NULL ") &&
			!(strings.Contains(line, " cmd=ping ") && strings.Contains(line, " user=default ")) {
			proxied++
			if !strings.Contains(line, " user=app ") {
				t.Errorf("a proxy connection not as user app: %s", line)
			}
		}
	}
	if proxied == 0 {
		t.Errorf("no connection on the TLS port:\n%s", list)
	}
}

// writeCert writes dir/name.pem and dir/name.key: a CA when parent is nil, otherwise a
// certificate for 127.0.0.1 signed by parent.
func writeCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "sessionproxy test " + name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	signer, signKey := parent, parentKey
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		signer, signKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for file, block := range map[string]*pem.Block{
		name + ".pem": {Type: "CERTIFICATE", Bytes: der},
		name + ".key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}
