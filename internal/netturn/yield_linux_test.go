//go:build linux

package netturn

import (
	"syscall"
	"testing"
	"time"
)

// TestYield: Wait returns, every time (its byte comes back through the network poller), and
// drains what it wrote (else the socket pair fills and Wait stops waiting); after Close it
// returns at once.
func TestYield(t *testing.T) {
	y := New()
	if y == nil {
		t.Fatal("no socket pair")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 5000 {
			y.Wait()
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("5000 waits did not return within 10 s")
	}
	rc, err := y.r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	var n int
	var perr error
	if err := rc.Control(func(fd uintptr) {
		n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		t.Fatal(err)
	}
	if perr != syscall.EAGAIN {
		t.Errorf("after the waits the pair has bytes left unread (peek: %d, %v)", n, perr)
	}
	y.Close()
	closed := make(chan struct{})
	go func() { y.Wait(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("wait after close did not return")
	}
}
