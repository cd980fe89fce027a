//go:build linux

package proxy

import (
	"net"
	"syscall"
	"testing"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// TestListenInherits: a connection accepted from listenTCP's listener has TCP keep-alive on
// with Go's default timing, set once on the listener, and receive timestamps when the listener
// has them (StampListener): what StampInherited and the keep-alive left to the kernel rely on.
func TestListenInherits(t *testing.T) {
	ln, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if !resp.StampListener(ln) {
		t.Fatal("StampListener failed")
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rc, err := a.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
		{"SO_TIMESTAMPNS", syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1},
	} {
		var v int
		var gerr error
		if err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), o.level, o.opt) }); err != nil || gerr != nil {
			t.Fatalf("%s: %v %v", o.name, err, gerr)
		}
		if v != o.want {
			t.Errorf("accepted connection: %s = %d, want %d", o.name, v, o.want)
		}
	}
}
