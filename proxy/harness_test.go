package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/resp"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// startProxy runs an in-process proxy in front of up until the test ends.
func startProxy(t testing.TB, up *redistest.Server, tweak ...func(*Options)) *Server {
	t.Helper()
	opts := Options{
		Listen: "127.0.0.1:0", Upstream: up.Addr(),
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second,
		PoolSize: 2, MaxClients: 1000,
		Limits:          resp.Limits{MaxBulkLen: 512 << 20, MaxMultibulkLen: 1<<31 - 1, MaxInlineLen: 64 << 10},
		ShutdownTimeout: 2 * time.Second,
		Schema:          testSchema(t),
		// CI runs this package once per way of reading clients (Makefile test): epoll, the
		// binary's default on Linux, unless told netpoller.
		Poll: os.Getenv("SESSIONPROXY_TEST_CLIENT_READS") != "netpoller",
	}
	for _, f := range tweak {
		f(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.listening:
	case err := <-done:
		t.Fatalf("proxy did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop within 10s")
		}
	})
	return s
}

// testSchema is the default rule set plus a connect-redis style JSON rule and the other layouts.
func testSchema(t testing.TB) *rewrite.Schema {
	t.Helper()
	s, err := rewrite.NewSchema(rewrite.DefaultPrefix, []rewrite.Rule{
		rewrite.DefaultRule(),
		{Name: "express", Pattern: "sess:*", JSONPath: "passport.user", Layout: rewrite.LayoutSet, IndexKey: "juser:{uid}"},
		{Name: "scored", Pattern: "zsess:*", Field: "uid", Layout: rewrite.LayoutZSet, IndexKey: "zuser:{uid}"},
		{Name: "global", Pattern: "gsess:*", Field: "uid", Layout: rewrite.LayoutGlobalZSet, IndexKey: "idx-session-uid"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawConn is a test client that sends raw bytes and reads raw replies.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, br: bufio.NewReaderSize(nc, 64<<10)}
}

// send writes raw bytes.
func (c *rawConn) send(b []byte) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// replies reads n complete raw replies.
func (c *rawConn) replies(n int) []byte {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []byte
	for i := range n {
		var err error
		if out, err = resp.AppendReply(out, c.br); err != nil {
			c.t.Fatalf("reply %d of %d: %v (so far %q)", i+1, n, err, clip(out))
		}
	}
	return out
}

// do sends one command given as words and returns its raw reply.
func (c *rawConn) do(args ...string) string {
	c.t.Helper()
	c.send(encode(args...))
	return string(c.replies(1))
}

// encode builds a RESP multibulk command.
func encode(args ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.Bytes()
}

func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// readAllUntilClose reads until EOF or timeout and returns what arrived.
func (c *rawConn) readAllUntilClose(timeout time.Duration) ([]byte, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.br.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}

func words(s string) []string { return strings.Fields(s) }
