//go:build linux

package proxy

import (
	"crypto/tls"
	"net"
	"syscall"
)

// idleOpen reports whether an idle upstream connection is still open: a non-blocking peek finds
// nothing to read. EOF (Redis' idle timeout, CLIENT KILL) or an error means it is gone; bytes
// nobody asked for mean it is unusable. Under TLS the peek sees the raw socket, where a record
// the server sent unasked (a session ticket) is not an error: only EOF and errors count there.
func idleOpen(nc net.Conn) bool {
	raw, isTLS := nc, false
	if tc, ok := nc.(*tls.Conn); ok {
		raw, isTLS = tc.NetConn(), true
	}
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	var perr error
	var b [1]byte
	if err := rc.Control(func(fd uintptr) {
		n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		return false
	}
	switch {
	case perr == syscall.EAGAIN:
		return true
	case perr != nil, n == 0:
		return false
	default:
		return isTLS
	}
}
