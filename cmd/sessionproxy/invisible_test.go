package main

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// TestIdleProxyInvisible: a proxy with its reaper running, alone on its Redis, is not seen by
// apps while idle (issue 11, items 7 and 8): no pattern subscription of its own (PUBSUB
// NUMPAT stays 0), and no key written per tick (a client tracking every key in broadcast mode
// gets no invalidation, and the lease key does not exist).
func TestIdleProxyInvisible(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up.Addr(), "SESSIONPROXY_REAPER_INTERVAL=200ms")
	nc, err := net.DialTimeout("tcp", up.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	send := func(args ...string) string {
		t.Helper()
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := nc.Write(encode(args...)); err != nil {
			t.Fatal(err)
		}
		r, err := resp.AppendReply(nil, br)
		if err != nil {
			t.Fatal(err)
		}
		return string(r)
	}
	send("HELLO", "3")
	if r := send("CLIENT", "TRACKING", "on", "BCAST"); r != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING: %q", r)
	}
	c := dialRESP(t, p.Addr)
	if r := c.do("SET", "warm", "1"); r != "+OK\r\n" { // the app's own write: one push
		t.Fatalf("SET: %q", r)
	}
	// Ten reaper intervals.
	_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	var pushes []string
	for {
		r, err := resp.AppendReply(nil, br)
		if err != nil {
			break
		}
		pushes = append(pushes, string(r))
	}
	if len(pushes) != 1 {
		t.Errorf("tracking client got %d pushes while the proxy idled, want 1 (the app's SET): %q", len(pushes), pushes)
	}
	if r := c.do("PUBSUB", "NUMPAT"); r != ":0\r\n" {
		t.Errorf("PUBSUB NUMPAT through the proxy: %q, want :0", r)
	}
	if r := c.do("EXISTS", "sessionproxy:reaper-lease"); r != ":0\r\n" {
		t.Errorf("lease key exists: %q", r)
	}
}
