//go:build linux

package resp

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/netturn"
)

// Poller is an epoll instance of the proxy's own that tells client connections when they have
// bytes to read. Go's netpoller makes a goroutine read until EAGAIN before it parks: for a
// client that sends one batch and waits for its replies, every batch costs a read that returns
// nothing (about 0.9 of the 1.8 reads per request at -P 1). A connection on the Poller reads
// once, sees from the count that it took everything there was, and waits for the Poller's
// word instead. The Poller's epoll descriptor is itself on Go's netpoller, so its loop parks
// like any goroutine; one epoll_wait hands it the ready connections of a whole turn. Measured
// (bench/README.md "An epoll loop for client reads"): as few syscalls per request as predixy,
// but not less CPU. Because the Poller sees every client's readiness before any goroutine
// runs, it also decides whose work comes first: clients with bytes at once, hang-ups a few a
// turn (harvest), which keeps 10,000 clients leaving at once from queueing ahead of a PING.
type Poller struct {
	f     *os.File // the epoll descriptor, on Go's netpoller
	epfd  int      // the same (f.Fd would make it blocking)
	rc    syscall.RawConn
	shut  atomic.Bool
	mu    sync.RWMutex
	conns []*pollReader // by file descriptor
	gen   int32         // registrations so far (under mu): an event names its registration
	evs   []syscall.EpollEvent
	n     int
	err   error
	waitf func(fd uintptr) bool
	lookf func(fd uintptr) // wait, as a RawConn.Control callback
	done  chan struct{}
	later []*pollReader // to wake a few a turn (harvest); the loop's own
}

// NewPoller starts a Poller; Close stops it.
func NewPoller() (*Poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	f := os.NewFile(uintptr(fd), "epoll") // non-blocking: Go's netpoller watches it
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	p := &Poller{f: f, epfd: fd, rc: rc, evs: make([]syscall.EpollEvent, 256), done: make(chan struct{})}
	p.waitf = p.wait
	p.lookf = func(fd uintptr) { p.wait(fd) }
	go p.loop()
	return p, nil
}

// Close stops the Poller. Connections still on it are not woken by it any more: close them
// first.
func (p *Poller) Close() error {
	if p.shut.Swap(true) {
		return nil
	}
	err := p.f.Close()
	<-p.done
	return err
}

// wait is the RawConn callback: one epoll_wait that does not block; false parks the loop on Go's
// netpoller until the epoll descriptor is readable (an event is queued).
func (p *Poller) wait(fd uintptr) bool {
	for {
		p.n, p.err = syscall.EpollWait(int(fd), p.evs, 0)
		if p.err != syscall.EINTR {
			return p.n > 0 || p.err != nil
		}
	}
}

func (p *Poller) loop() {
	defer close(p.done)
	y := netturn.New()
	defer y.Close()
	for {
		if len(p.later) == 0 {
			if err := p.rc.Read(p.waitf); err != nil || p.err != nil {
				return // closed
			}
		} else {
			// Readers are waiting for their turn: look again after a turn of Go's poller
			// (what was woken has run, Redis' replies have come in), without parking.
			y.Wait()
			if err := p.rc.Control(p.lookf); err != nil || p.err != nil {
				return // closed
			}
		}
		p.mu.RLock()
		p.harvest()
		// Leavers a few a turn: when 10,000 clients disconnect at once, the clients still
		// there are served first, every turn.
		k := min(len(p.later), laterBatch)
		for i, r := range p.later[:k] {
			r.later = false
			r.wake()
			p.later[i] = nil
		}
		p.later = p.later[k:]
		if len(p.later) == 0 {
			p.later = nil // let the backing array go after a storm
		}
		p.mu.RUnlock()
		if len(p.later) == 0 {
			// Let the woken readers run before the next look: by then more connections
			// have bytes, and one epoll_wait returns them all rather than one that finds
			// nothing.
			runtime.Gosched()
		}
	}
}

// harvest takes the events of one look, and of more looks while each fills the buffer: the
// kernel queues events in the order they came, and a client must not wait behind thousands of
// leavers' events for its own. Readers with bytes are woken at once; hang-ups queue in later.
// (Newcomers' first bytes need no such queue: the accept loop already takes 16 a turn.)
// Called with mu read-held, on the loop's goroutine.
func (p *Poller) harvest() {
	for {
		for _, ev := range p.evs[:p.n] {
			fd := int(ev.Fd)
			if fd >= len(p.conns) {
				continue
			}
			// An event harvested just before its connection closed may meet the next
			// connection on the same descriptor: the registration tells them apart.
			r := p.conns[fd]
			if r == nil || r.gen != ev.Pad {
				continue
			}
			hup := ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0
			if hup {
				r.hup.Store(true)
			}
			switch {
			case r.later:
			case hup:
				r.later = true
				p.later = append(p.later, r)
			default:
				r.wake()
			}
		}
		if p.n < len(p.evs) {
			return
		}
		if err := p.rc.Control(p.lookf); err != nil || p.err != nil {
			p.n = 0
			return // closed: the loop sees it at its next look
		}
	}
}

// laterBatch is how many leavers' readers the Poller wakes a turn.
const laterBatch = 16

// pollReader reads a client connection whose readiness the Poller reports. Reads and waits
// happen on the connection's reader goroutine; Close and SetReadDeadline may come from others.
type pollReader struct {
	p       *Poller
	rc      syscall.RawConn
	fd      int
	gen     int32
	ready   chan struct{} // the Poller's word (or a deadline's, or Close's); holds one
	drained bool          // the last read took everything there was: wait before the next
	// hup: the peer closed (or the connection failed). A read that returns the last bytes does
	// not take the end with them, and the end's event may have been merged with the bytes'
	// (one wake-up): from now on the reader reads until the end instead of waiting.
	hup    atomic.Bool
	closed atomic.Bool
	// later: a hang-up queued to be woken in its turn (Poller.harvest); the loop's own.
	later bool
	dl    atomic.Int64 // read deadline, unix ns; 0: none
	tmu   sync.Mutex
	timer *time.Timer
	// One read's state, kept here so that the callback (made once) allocates nothing.
	buf   []byte
	stamp bool
	oob   [64]byte
	n     int
	at    int64
	rerr  error
	readf func(fd uintptr) bool
}

// Poll puts c's reads on p: c must be a plain TCP connection (not TLS) that nothing has read
// yet. False if it cannot be (then c reads through Go's netpoller, as without it).
func (c *Conn) Poll(p *Poller) bool {
	tc, ok := c.Conn.(*net.TCPConn)
	if !ok || p == nil {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	r := &pollReader{p: p, rc: rc, fd: -1, ready: make(chan struct{}, 1)}
	r.readf = r.recv
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		r.fd = int(fd)
		p.mu.Lock()
		if r.fd >= len(p.conns) {
			p.conns = append(p.conns, make([]*pollReader, r.fd+1-len(p.conns)+len(p.conns)/2)...)
		}
		p.conns[r.fd] = r
		p.gen++
		r.gen = p.gen
		p.mu.Unlock()
		// Edge-triggered: an event for every arrival of bytes, which is all a reader that
		// waits only after a read that drained the socket needs.
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET, Fd: int32(fd), Pad: r.gen}
		cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	}); err != nil || cerr != nil {
		r.unregister()
		return false
	}
	c.poll = r
	return true
}

// wake gives the reader a turn; a turn already pending is enough.
func (r *pollReader) wake() {
	select {
	case r.ready <- struct{}{}:
	default:
	}
}

// unregister takes the connection off the Poller; called before its descriptor closes.
func (r *pollReader) unregister() {
	if r.closed.Swap(true) {
		return
	}
	p := r.p
	p.mu.Lock()
	if r.fd >= 0 && r.fd < len(p.conns) && p.conns[r.fd] == r {
		p.conns[r.fd] = nil
	}
	p.mu.Unlock()
	// No EPOLL_CTL_DEL: the descriptor's close, which follows (Conn.Close; a failed Poll
	// registered nothing), takes it out of the epoll set, and until then its events find no
	// reader here. One syscall fewer per connection.
	r.tmu.Lock()
	if r.timer != nil {
		r.timer.Stop()
	}
	r.tmu.Unlock()
	r.wake()
}

// setReadDeadline is net.Conn's, for the reads the Poller wakes.
func (r *pollReader) setReadDeadline(t time.Time) {
	r.tmu.Lock()
	defer r.tmu.Unlock()
	if r.timer != nil {
		r.timer.Stop()
	}
	if t.IsZero() {
		r.dl.Store(0)
		return
	}
	r.dl.Store(t.UnixNano())
	if d := time.Until(t); d > 0 {
		r.timer = time.AfterFunc(d, r.wake)
	} else {
		r.wake()
	}
}

// recv is the RawConn callback: one read (recvmsg when the receive time is wanted). It never
// asks Go's netpoller to wait: EAGAIN is the Poller's to wait for.
func (r *pollReader) recv(fd uintptr) bool {
	if r.stamp {
		r.n, r.at, r.rerr = recvStamped(int(fd), r.buf, r.oob[:])
		return true
	}
	for {
		if r.n, r.rerr = syscall.Read(int(fd), r.buf); r.rerr != syscall.EINTR {
			return true
		}
	}
}

// read reads into buf like net.Conn.Read; with stamp it also returns the kernel's receive time of
// the bytes (unix ns), 0 if none.
func (r *pollReader) read(buf []byte, stamp bool) (int, int64, error) {
	for {
		if r.drained {
			if err := r.waitable(); err != nil {
				return 0, 0, err
			}
			<-r.ready
		}
		if err := r.waitable(); err != nil {
			return 0, 0, err
		}
		r.buf, r.stamp, r.n, r.at, r.rerr = buf, stamp, 0, 0, nil
		err := r.rc.Read(r.readf)
		r.buf = nil
		switch {
		case err != nil:
			return 0, 0, err
		case r.rerr == syscall.EAGAIN:
			r.drained = true // a wake-up for bytes read already: wait for the next
			continue
		case r.rerr != nil:
			return 0, 0, &net.OpError{Op: "read", Net: "tcp", Err: r.rerr}
		case r.n == 0 && len(buf) > 0:
			return 0, 0, io.EOF
		}
		// Less than asked for: the socket had no more, and bytes that come later raise an
		// event. A full buffer may have left some: read again before waiting.
		r.drained = r.n < len(buf) && !r.hup.Load()
		return r.n, r.at, nil
	}
}

// waitable is the error that ends a read before it waits: the connection closed, or the read
// deadline passed.
func (r *pollReader) waitable() error {
	if r.closed.Load() {
		return &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
	}
	if dl := r.dl.Load(); dl != 0 && time.Now().UnixNano() >= dl {
		return &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	}
	return nil
}

// epollET is EPOLLET as the uint32 the event mask is (syscall's constant is negative).
const epollET = 1 << 31
