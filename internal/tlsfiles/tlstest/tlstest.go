// Package tlstest writes a small PKI for tests: a CA, a server certificate for 127.0.0.1 and
// localhost, and a client certificate, as PEM files in a directory.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is the files written and what a test client needs to use them.
type PKI struct {
	CA, Cert, Key, ClientCert, ClientKey string // file paths
	Pool                                 *x509.CertPool
	Client                               tls.Certificate

	t      testing.TB
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

// Write creates the PKI under dir.
func Write(t testing.TB, dir string) *PKI {
	t.Helper()
	p := &PKI{t: t, CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "server.crt"),
		Key: filepath.Join(dir, "server.key"), ClientCert: filepath.Join(dir, "client.crt"),
		ClientKey: filepath.Join(dir, "client.key"), Pool: x509.NewCertPool()}
	p.caKey = newKey(t)
	tmpl := p.template("sessionproxy test CA")
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.Pool.AddCert(p.caCert)
	writePEM(t, p.CA, "CERTIFICATE", der)
	p.Rotate()
	key := newKey(t)
	ct := p.template("client")
	ct.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	p.sign(ct, key, p.ClientCert, p.ClientKey)
	if p.Client, err = tls.LoadX509KeyPair(p.ClientCert, p.ClientKey); err != nil {
		t.Fatal(err)
	}
	return p
}

// Rotate writes a new server certificate and key (a new serial number), as a renewal does, and
// returns its serial.
func (p *PKI) Rotate() *big.Int {
	p.t.Helper()
	tmpl := p.template("server")
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	tmpl.DNSNames = []string{"localhost"}
	p.sign(tmpl, newKey(p.t), p.Cert, p.Key)
	return tmpl.SerialNumber
}

// ClientConfig is a client's configuration trusting the CA, with the client certificate if
// withCert.
func (p *PKI) ClientConfig(withCert bool) *tls.Config {
	c := &tls.Config{RootCAs: p.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if withCert {
		c.Certificates = []tls.Certificate{p.Client}
	}
	return c
}

func (p *PKI) template(cn string) *x509.Certificate {
	p.serial++
	return &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano() + p.serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

func (p *PKI) sign(tmpl *x509.Certificate, key *ecdsa.PrivateKey, certFile, keyFile string) {
	p.t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	writePEM(p.t, keyFile, "EC PRIVATE KEY", kb)
	writePEM(p.t, certFile, "CERTIFICATE", der)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writePEM replaces name atomically, as a certificate manager does (rename over the old file).
func writePEM(t testing.TB, name, typ string, der []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}
