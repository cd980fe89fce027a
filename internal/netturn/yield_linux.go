//go:build linux

package netturn

import (
	"os"
	"runtime"
	"syscall"
)

// Yield parks a goroutine until Go's network poller next runs. The runtime polls the network
// only when it has no goroutine to run, or from its monitor every 10 ms; a goroutine that
// yields with runtime.Gosched instead comes back after the run queue alone, so a loop that
// starts work (an accept loop in a storm of 10,000 connections) keeps the queue from ever
// emptying, and replies that came from Redis wait for the monitor, 128 events a time. Waiting
// here lets the queue drain and the poller run first, as an event loop serves every ready
// descriptor once a turn. It writes a byte to a socket pair and waits for the poller to report
// it readable. A nil *Yield (no socket pair to be had) yields to the run queue instead.
type Yield struct {
	r *os.File
	w int
}

// New makes a Yield; nil (which Wait treats as a yield to the run queue) where no socket pair
// can be had.
func New() *Yield {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	// A non-blocking descriptor makes a File the runtime's poller watches.
	return &Yield{r: os.NewFile(uintptr(fds[0]), "pollyield"), w: fds[1]}
}

// Wait returns once the network poller has run (or the pair was closed).
func (y *Yield) Wait() {
	if y == nil {
		runtime.Gosched()
		return
	}
	rc, err := y.r.SyscallConn()
	if err != nil {
		return
	}
	wrote := false
	// Read resets the descriptor's readiness before it calls the func, so the byte written in
	// the first call is news only a poll can bring: the second call comes after one.
	_ = rc.Read(func(fd uintptr) bool {
		if !wrote {
			wrote = true
			if _, err := syscall.Write(y.w, []byte{0}); err != nil {
				return true
			}
			return false
		}
		var b [16]byte
		_, _ = syscall.Read(int(fd), b[:])
		return true
	})
}

// Close releases the socket pair; Waits after it return at once.
func (y *Yield) Close() {
	if y == nil {
		return
	}
	y.r.Close()
	syscall.Close(y.w)
}
