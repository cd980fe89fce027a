//go:build linux

package resp

import (
	"sync"
	"syscall"
)

// Prober finds client connections whose bytes have reached the host but not been read yet,
// and when they arrived. A goroutine that woke for its own bytes can thereby tell that
// another client's earlier bytes wait for a goroutine the runtime has not run yet, which the
// Go netpoller gives no way to see. It keeps its own level-triggered epoll set of the
// connections (Add); the runtime's edge-triggered one is not touched.
type Prober struct {
	epfd int

	mu     sync.Mutex // guards the buffers below: one probe at a time
	events [probeMax + 1]syscall.EpollEvent
	buf    [1]byte
	oob    [64]byte
}

// probeMax is the most connections with unread bytes a probe peeks at. More than that is a
// loaded proxy, where a peek per connection per batch would cost more than the order it buys:
// the probe then reports nothing.
const probeMax = 8

// NewProber returns a prober, or nil where the kernel refuses an epoll set.
func NewProber() *Prober {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	return &Prober{epfd: fd}
}

// Close releases the epoll set; later probes see nothing.
func (p *Prober) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fd := p.epfd
	p.epfd = -1
	return syscall.Close(fd)
}

// Add watches c, a connection whose reads are stamped (Conn.Stamp). The kernel forgets it
// when it closes.
func (p *Prober) Add(c *Conn) {
	if p == nil || c.stamp == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.epfd < 0 {
		return
	}
	_ = c.stamp.rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
}

// Earlier reports whether a watched connection other than self has unread bytes that arrived
// in [from, to) (unix ns). It costs one epoll_wait, plus a peek per connection with unread bytes
// (false, without peeks, when more than probeMax have some).
func (p *Prober) Earlier(self *Conn, from, to int64) bool {
	if p == nil {
		return false
	}
	own := int32(-1)
	if self != nil && self.stamp != nil {
		own = self.stamp.fd
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.epfd < 0 {
		return false
	}
	n, err := syscall.EpollWait(p.epfd, p.events[:], 0)
	if err != nil || n > probeMax {
		return false
	}
	for _, ev := range p.events[:n] {
		if ev.Fd == own || ev.Events&syscall.EPOLLIN == 0 {
			continue
		}
		// The peek reads the receive time of the first unread segment and consumes nothing.
		// An fd that closed since the wait and was reused at worst yields a spurious wait.
		_, oobn, _, _, err := syscall.Recvmsg(int(ev.Fd), p.buf[:], p.oob[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err != nil {
			continue
		}
		if at := parseStamp(p.oob[:oobn]); at >= from && at < to {
			return true
		}
	}
	return false
}
