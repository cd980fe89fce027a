//go:build linux

package resp

import (
	"encoding/binary"
	"io"
	"net"
	"syscall"
)

// stamper reads a TCP connection with recvmsg and keeps the kernel's receive time of the bytes
// it read (SO_TIMESTAMPNS): the order in which clients' bytes reached the host, which the
// order in which their goroutines get to run does not keep (Go's netpoller hands the
// goroutines of one wake-up back in reverse).
type stamper struct {
	rc  syscall.RawConn
	fd  int32 // for Prober; the connection's own goroutine is the only reader
	oob [64]byte
	// One read's state, kept here so that the callback (made once) allocates nothing.
	p       []byte
	n       int
	at      int64
	rerr    error
	recvmsg func(fd uintptr) bool
}

// newStamper enables receive timestamps on c (set: the option is not on c yet); nil where c is
// not a TCP connection or the option is refused.
func newStamper(c net.Conn, set bool) *stamper {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	if set && !timestampsOn(rc) {
		return nil
	}
	var sfd int32
	if err := rc.Control(func(fd uintptr) { sfd = int32(fd) }); err != nil {
		return nil
	}
	s := &stamper{rc: rc, fd: sfd}
	s.recvmsg = s.recv
	return s
}

// recv is the RawConn callback: one recvmsg into s.p; false waits for readiness.
func (s *stamper) recv(fd uintptr) bool {
	s.n, s.at, s.rerr = recvStamped(int(fd), s.p, s.oob[:])
	return s.rerr != syscall.EAGAIN // else wait for readiness (and the read deadline)
}

// recvStamped is one recvmsg into p (EINTR retried) with the kernel's receive time of what it
// read (unix ns; 0 if none), oob holding the control message.
func recvStamped(fd int, p, oob []byte) (n int, at int64, err error) {
	for {
		var oobn int
		n, oobn, _, _, err = syscall.Recvmsg(fd, p, oob, 0)
		switch err {
		case syscall.EINTR:
			continue
		case nil:
			at = parseStamp(oob[:oobn])
		}
		return n, at, err
	}
}

// read reads into p like net.Conn.Read and returns the kernel's receive time (unix ns) of what
// it read (TCP reports the last segment's), 0 if the kernel gave none.
func (s *stamper) read(p []byte) (n int, at int64, err error) {
	s.p, s.n, s.at, s.rerr = p, 0, 0, nil
	err = s.rc.Read(s.recvmsg)
	s.p = nil
	n, at = s.n, s.at
	switch {
	case err != nil: // e.g. the read deadline, after an EAGAIN
		n = 0
	case s.rerr != nil:
		n, err = 0, &net.OpError{Op: "read", Net: "tcp", Err: s.rerr}
	case n == 0 && len(p) > 0:
		err = io.EOF
	}
	return n, at, err
}

// parseStamp finds the SCM_TIMESTAMPNS message in oob without allocating.
func parseStamp(oob []byte) int64 {
	for len(oob) >= syscall.SizeofCmsghdr {
		h := (*syscall.Cmsghdr)(ptr(oob))
		l := int(h.Len)
		if l < syscall.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if h.Level == syscall.SOL_SOCKET && h.Type == syscall.SCM_TIMESTAMPNS && l >= syscall.CmsgLen(16) {
			data := oob[syscall.CmsgLen(0):]
			sec := int64(binary.NativeEndian.Uint64(data))
			nsec := int64(binary.NativeEndian.Uint64(data[8:]))
			return sec*1e9 + nsec
		}
		oob = oob[min(syscall.CmsgSpace(l-syscall.CmsgLen(0)), len(oob)):]
	}
	return 0
}

// StampListener turns receive timestamps on for ln's connections from the start: the kernel
// enables timestamping host-wide some time after the first socket asks (deferred work), and
// connections accepted later inherit the option (their Conns then use StampInherited). False
// if it could not.
func StampListener(ln net.Listener) bool {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return false
	}
	rc, err := tl.SyscallConn()
	return err == nil && timestampsOn(rc)
}

// timestampsOn turns receive timestamps (SO_TIMESTAMPNS) on for rc's socket.
func timestampsOn(rc syscall.RawConn) bool {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	})
	return err == nil && serr == nil
}
