package main

import (
	"context"
	"crypto/tls"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/tlsfiles/tlstest"
)

// TestClientTLS: with clients.tls set the proxy serves TLS on its own port with Redis'
// defaults: a client certificate signed by ca_file is required (tls-auth-clients yes), a plain
// client on that port gets nothing and is closed, go-redis and redis-cli --tls work through it
// (session writes indexed as on the plain port), and a renewed certificate is served to new
// connections after SIGHUP while an open connection keeps working.
func TestClientTLS(t *testing.T) {
	up := redistest.Start(t)
	pki := tlstest.Write(t, t.TempDir())
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(redistest.FreePort(t)))
	p := startProxy(t, up.Addr(), "SESSIONPROXY_CLIENTS_TLS_LISTEN="+tlsAddr,
		"SESSIONPROXY_CLIENTS_TLS_CERT_FILE="+pki.Cert, "SESSIONPROXY_CLIENTS_TLS_KEY_FILE="+pki.Key,
		"SESSIONPROXY_CLIENTS_TLS_CA_FILE="+pki.CA)
	ctx := context.Background()

	rdb := redis.NewClient(&redis.Options{Addr: tlsAddr, TLSConfig: pki.ClientConfig(true), MaxRetries: -1})
	defer rdb.Close()
	if err := rdb.HSet(ctx, "session:tls1", "userid", "77").Err(); err != nil {
		t.Fatalf("HSET over TLS: %v", err)
	}
	if got, err := up.DoText("SMEMBERS", "user:77"); err != nil || !strings.Contains(got, "tls1") {
		t.Fatalf("the session written over TLS is not indexed: %q %v", got, err)
	}

	noCert := redis.NewClient(&redis.Options{Addr: tlsAddr, TLSConfig: pki.ClientConfig(false), MaxRetries: -1})
	defer noCert.Close()
	if err := noCert.Ping(ctx).Err(); err == nil {
		t.Fatal("a client without a certificate got in (auth_clients: yes)")
	}

	plain := dialRESP(t, tlsAddr)
	plain.send(encode("PING"))
	plain.expectClosed(5 * time.Second)

	if _, err := exec.LookPath("redis-cli"); err == nil {
		out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", portOf(t, tlsAddr), "--tls",
			"--cacert", pki.CA, "--cert", pki.ClientCert, "--key", pki.ClientKey, "HGET", "session:tls1", "userid").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "77" {
			t.Errorf("redis-cli --tls: %q %v", out, err)
		}
	}

	// Renewal: new connections get the new certificate after SIGHUP; the open one goes on.
	oldSerial := peerSerial(t, tlsAddr, pki.ClientConfig(true))
	newSerial := pki.Rotate()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return peerSerial(t, tlsAddr, pki.ClientConfig(true)) == newSerial.String() }) {
		t.Fatalf("certificate still %s after SIGHUP, want %s", peerSerial(t, tlsAddr, pki.ClientConfig(true)), newSerial)
	}
	if oldSerial == newSerial.String() {
		t.Fatal("the renewal did not change the serial")
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("the connection opened before the renewal: %v", err)
	}
	if !p.alive() {
		t.Fatal("SIGHUP ended the process")
	}
	if m := scrapeMetrics(t, p.HTTP); m[`sessionproxy_client_rejected_total{reason="tls_handshake"}`] < 2 {
		t.Errorf("failed handshakes counted: %v, want at least 2 (no certificate, plain)", m[`sessionproxy_client_rejected_total{reason="tls_handshake"}`])
	}
}

// peerSerial is the serial of the certificate the server at addr presents.
func peerSerial(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestSighupNeverEnds: SIGHUP does not end the process, whether TLS files are configured or not,
// also while it drains clients after SIGTERM: the drain finishes and the exit is clean.
func TestSighupNeverEnds(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up.Addr())
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if !p.alive() {
		t.Fatalf("SIGHUP ended the process: %v", p.state)
	}
	blocked := dialRESP(t, p.Addr)
	blocked.send(encode("BLPOP", "hup:list", "0")) // keeps the drain waiting
	time.Sleep(100 * time.Millisecond)
	code := make(chan int, 1)
	go func() { c, _ := p.stop(); code <- c }()
	time.Sleep(50 * time.Millisecond)
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(50 * time.Millisecond)
	if !p.alive() {
		t.Fatalf("SIGHUP during the drain ended the process: %v", p.state)
	}
	blocked.close()
	if c := <-code; c != 0 {
		t.Errorf("exit code %d after the drain, want 0", c)
	}
}
