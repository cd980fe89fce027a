//go:build linux

package resp

import (
	"net"
	"slices"
	"testing"
	"time"
)

// TestProber: a connection's unread bytes are seen with their receive time, a peek consumes
// nothing, the caller's own connection is skipped, and OnBatch reports whole commands only.
func TestProber(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	StampListener(ln)
	p := NewProber()
	if p == nil {
		t.Fatal("no epoll")
	}
	defer p.Close()
	accept := func() (*Conn, net.Conn) {
		t.Helper()
		cl, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c := NewConn(sc, DefaultLimits())
		c.Stamp()
		p.Add(c)
		t.Cleanup(func() { cl.Close(); sc.Close() })
		return c, cl
	}
	a, acl := accept()
	b, bcl := accept()
	// The kernel turns receive timestamps on host-wide some time after the first socket asks
	// (deferred work); segments received before carry none. Wait until a read has one.
	buf := make([]byte, 64)
	for deadline := time.Now().Add(5 * time.Second); a.Arrival() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no receive timestamps on this host after 5 s")
		}
		if _, err := acl.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Read(buf); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	before := time.Now().UnixNano()
	if _, err := acl.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !p.Earlier(b, before, time.Now().UnixNano()+1) {
		if time.Now().After(deadline) {
			t.Fatal("a's unread bytes not seen")
		}
		time.Sleep(time.Millisecond)
	}
	if p.Earlier(a, before, time.Now().UnixNano()+1) {
		t.Fatal("own connection reported")
	}
	if p.Earlier(b, 0, before) {
		t.Fatal("bytes that arrived after the window reported")
	}
	// Nothing was consumed; a read reports the same bytes, and OnBatch runs with their receive
	// time as soon as the read returns (and again at the boundary: the caller's registration is
	// idempotent).
	var batches []int64
	partials := 0
	a.OnBatch = func(at int64) { batches = append(batches, at) }
	_, _ = bcl.Write([]byte("*1\r\n$4\r\nPI"))
	n, err := a.Read(buf)
	if err != nil || string(buf[:n]) != "*1\r\n$4\r\nPING\r\n" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	if len(batches) == 0 || batches[0] < before || slices.Compact(slices.Clone(batches))[0] != batches[len(batches)-1] {
		t.Fatalf("OnBatch calls %v", batches)
	}
	// b holds part of a command: its first read registers, then withdraws (OnPartial), and hands
	// nothing on until the rest comes; the read that completes it registers again.
	batches = batches[:0]
	b.OnBatch = func(at int64) { batches = append(batches, at) }
	b.OnPartial = func() { partials++ }
	time.AfterFunc(50*time.Millisecond, func() { _, _ = bcl.Write([]byte("NG\r\n")) })
	n, err = b.Read(buf)
	if err != nil || string(buf[:n]) != "*1\r\n$4\r\nPING\r\n" {
		t.Fatalf("b read %q %v", buf[:n], err)
	}
	if partials != 1 || len(batches) < 2 || batches[len(batches)-1] <= batches[0] {
		t.Fatalf("OnBatch calls %v, OnPartial %d: want the partial read withdrawn, then the whole command registered with its later time", batches, partials)
	}
	if p.Earlier(b, 0, time.Now().UnixNano()) {
		t.Fatal("read bytes still reported")
	}
}
