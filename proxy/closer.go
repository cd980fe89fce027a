package proxy

import (
	"net"
	"sync"

	"github.com/sessionproxy/sessionproxy/internal/netturn"
)

// closer closes the sockets of clients that have gone (resp.Conn.SetDeferClose), a few per turn
// of Go's network poller. When 10,000 clients leave at once, each one's goroutine then only
// reads its end and returns, and the closes (about 20 µs of the kernel's time each, 200 ms
// together) are spread over turns in which the clients still there are served too.
type closer struct {
	mu      sync.Mutex
	queue   []net.Conn
	stopped bool
	wake    chan struct{} // capacity 1: queue has something
}

// closeBatch is how many sockets the closer closes between two turns of the network poller.
const closeBatch = 16

// closerMax bounds the queue; a socket beyond it is closed by its own goroutine.
const closerMax = 1 << 16

func newCloser() *closer { return &closer{wake: make(chan struct{}, 1)} }

// add takes nc to close later; false if it cannot (stopped, or the queue is full).
func (cl *closer) add(nc net.Conn) bool {
	cl.mu.Lock()
	ok := !cl.stopped && len(cl.queue) < closerMax
	if ok {
		cl.queue = append(cl.queue, nc)
	}
	cl.mu.Unlock()
	if ok {
		select {
		case cl.wake <- struct{}{}:
		default:
		}
	}
	return ok
}

// run closes what is queued until stop, then what is left.
func (cl *closer) run(stop <-chan struct{}) {
	y := netturn.New()
	defer y.Close()
	for {
		cl.mu.Lock()
		n := min(len(cl.queue), closeBatch)
		batch := cl.queue[:n:n]
		cl.queue = cl.queue[n:]
		more := len(cl.queue) > 0
		if len(cl.queue) == 0 {
			cl.queue = nil // let the backing array go after a burst
		}
		cl.mu.Unlock()
		for _, nc := range batch {
			nc.Close()
		}
		if more {
			y.Wait()
			continue
		}
		select {
		case <-cl.wake:
		case <-stop:
			cl.mu.Lock()
			cl.stopped = true
			left := cl.queue
			cl.queue = nil
			cl.mu.Unlock()
			for _, nc := range left {
				nc.Close()
			}
			return
		}
	}
}
