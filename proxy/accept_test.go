package proxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestAcceptBurst: 600 clients that connect at once and each send a PING all get their PONG
// (the accept loop waits for the network poller between batches of newcomers: none is left in
// the backlog), and a client connected before keeps being served.
func TestAcceptBurst(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up)
	est := dialRaw(t, s.Addr().String())
	if got := est.do("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING before: %q", got)
	}
	conns := dialMany(t, s.Addr().String(), 600)
	for _, c := range conns {
		if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "+PONG\r\n" {
			t.Fatalf("newcomer %d: %q, %v", i, line, err)
		}
	}
	if got := est.do("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING after: %q", got)
	}
}

// TestDisconnectBurst: 300 clients that end their side at once each get the proxy's end too (the
// sockets of clients that have gone are closed by the closer, a few per turn), after the reply
// to their last command; a client connected before keeps being served.
func TestDisconnectBurst(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up)
	est := dialRaw(t, s.Addr().String())
	conns := dialMany(t, s.Addr().String(), 300)
	for _, c := range conns {
		if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if got, err := io.ReadAll(c); err != nil || string(got) != "+PONG\r\n" {
			t.Fatalf("client %d: read %q until %v; want the PONG, then the proxy's end", i, got, err)
		}
	}
	if got := est.do("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING after: %q", got)
	}
}

// dialMany opens n connections to addr, one after the other, closed when the test ends.
func dialMany(t *testing.T, addr string, n int) []*net.TCPConn {
	t.Helper()
	conns := make([]*net.TCPConn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c.(*net.TCPConn))
	}
	return conns
}
