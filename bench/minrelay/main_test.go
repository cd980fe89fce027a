//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

func TestFraming(t *testing.T) {
	cmd := "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
	for _, tc := range []struct {
		in   string
		want int
	}{
		{cmd, len(cmd)},
		{cmd + "*1", len(cmd)},
		{cmd[:len(cmd)-1], -1},
		{"*2\r\n$3\r", -1},
		{"", -1},
		{"PING\r\n", -2},
		{"*1\r\n+x\r\n", -2},
	} {
		if got := commandEnd([]byte(tc.in), 0); got != tc.want {
			t.Errorf("commandEnd(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"+OK\r\n", 5},
		{"-ERR x\r\n:1\r\n", 8},
		{"$-1\r\n", 5},
		{"$3\r\nabc\r\n", 9},
		{"$3\r\nab", -1},
		{"*2\r\n$1\r\na\r\n$-1\r\n", 16},
		{"*2\r\n$1\r\na\r\n", -1},
		{"*-1\r\n", 5},
		{"%1\r\n", -2},
	} {
		if got := replyEnd([]byte(tc.in), 0); got != tc.want {
			t.Errorf("replyEnd(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestGoroutines: -mode goroutines relays pipelined commands of several concurrent clients to a
// real Redis and each client gets its own replies, in order; when Redis goes, waiting clients
// are disconnected and the relay ends with the error.
func TestGoroutines(t *testing.T) {
	up := redistest.Start(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ended := make(chan error, 1)
	go func() { ended <- serveGoroutines(ln, up.Addr()) }()
	var wg sync.WaitGroup
	for i := range 4 { // concurrent clients: their commands share upstream writes
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := net.Dial("tcp4", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer o.Close()
			for round := range 200 {
				var req, want []byte
				for k := range 1 + round%16 {
					v := fmt.Sprintf("%d-%d-%d", round, i, k)
					req = fmt.Appendf(req, "*3\r\n$3\r\nSET\r\n$1\r\n%d\r\n$%d\r\n%s\r\n*2\r\n$3\r\nGET\r\n$1\r\n%d\r\n", i, len(v), v, i)
					want = fmt.Appendf(want, "+OK\r\n$%d\r\n%s\r\n", len(v), v)
				}
				if _, err := o.Write(req); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, len(want))
				_ = o.SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, err := io.ReadFull(o, got); err != nil || string(got) != string(want) {
					t.Errorf("round %d client %d: %q, %v; want %q", round, i, got[:n], err, want)
					return
				}
			}
		}()
	}
	wg.Wait()

	// Redis goes while a client waits for its reply.
	o, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, err := o.Write([]byte("*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n0\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	up.Stop()
	_ = o.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := o.Read(make([]byte, 16)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a waiting client after Redis went: read %d bytes, %v; want it disconnected", n, err)
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the relay ended without an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the relay did not end after Redis went")
	}
}
