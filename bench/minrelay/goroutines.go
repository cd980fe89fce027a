//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

// runGoroutines is -mode goroutines: the same relay built the way sessionproxy is (a goroutine
// per client on Go's netpoller, one shared upstream connection whose writes coalesce the
// commands of every client waiting, a reader goroutine that hands each client its replies), and
// nothing else. Its cost per request against the epoll loop's is what the goroutine design
// costs by itself; against the proxy's, what the proxy's own work costs (bench/README.md).
func runGoroutines(listen, upstream string) error {
	ln, err := net.Listen("tcp4", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return serveGoroutines(ln, upstream)
}

// serveGoroutines relays ln's clients to upstream until the upstream connection fails (every
// client waiting is then disconnected) or ln is closed.
func serveGoroutines(ln net.Listener, upstream string) error {
	up, err := net.Dial("tcp4", upstream)
	if err != nil {
		ln.Close()
		return fmt.Errorf("upstream: %w", err)
	}
	r := &goRelay{up: up, ln: ln}
	go r.readLoop()
	for {
		c, err := ln.Accept()
		if err != nil {
			up.Close()
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.failed != nil {
				return r.failed
			}
			return fmt.Errorf("accept: %w", err)
		}
		go r.serve(c)
	}
}

type goRelay struct {
	up      net.Conn
	ln      net.Listener
	mu      sync.Mutex
	wbuf    []byte   // commands not written yet
	spare   []byte   // the other write buffer
	queue   []*goReq // requests whose replies are due, in order
	writing bool     // a goroutine is writing upstream
	sent    int      // requests written and not answered
	waiting int      // requests in wbuf
	failed  error    // the upstream connection broke
}

type goReq struct {
	n      int // replies still due
	reply  []byte
	done   chan struct{}
	failed bool // the upstream connection broke: no reply
}

func (r *goRelay) serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 16<<10)
	var in []byte
	req := &goReq{done: make(chan struct{}, 1)}
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		in = append(in, buf[:n]...)
		end, cmds := 0, 0
		for {
			e := commandEnd(in, end)
			if e == -2 {
				return
			}
			if e < 0 {
				break
			}
			end, cmds = e, cmds+1
		}
		if cmds == 0 {
			continue
		}
		req.n, req.reply = cmds, req.reply[:0]
		if !r.submit(in[:end], req) {
			return
		}
		<-req.done
		if req.failed {
			return
		}
		if _, err := c.Write(req.reply); err != nil {
			return
		}
		in = append(in[:0], in[end:]...)
	}
}

// submit queues cmds for req and writes them at once if nothing is outstanding; otherwise the
// reader writes everything queued meanwhile in one write when replies come back.
func (r *goRelay) submit(cmds []byte, req *goReq) bool {
	r.mu.Lock()
	if r.failed != nil {
		r.mu.Unlock()
		return false
	}
	r.wbuf = append(r.wbuf, cmds...)
	r.queue = append(r.queue, req)
	r.waiting++
	if r.sent == 0 && !r.writing {
		r.writeLocked()
	}
	r.mu.Unlock()
	return true
}

// writeLocked writes wbuf without holding mu during the write. Replies to everything sent may
// all come back during the write, and the reader then leaves what was queued meanwhile to this
// writer: it writes again until nothing is queued or replies are due (the reader writes then).
func (r *goRelay) writeLocked() {
	for len(r.wbuf) > 0 && r.failed == nil {
		b := r.wbuf
		r.wbuf, r.spare = r.spare[:0], nil
		r.sent += r.waiting
		r.waiting = 0
		r.writing = true
		r.mu.Unlock()
		_, err := r.up.Write(b)
		r.mu.Lock()
		r.writing = false
		r.spare = b[:0]
		if err != nil {
			r.failLocked(err)
		}
		if r.sent > 0 {
			return
		}
	}
}

// failLocked ends the relay: every waiting client is let go unanswered and disconnected, and
// the listener closes.
func (r *goRelay) failLocked(err error) {
	if r.failed != nil {
		return
	}
	r.failed = err
	for _, q := range r.queue {
		q.failed = true
		q.done <- struct{}{}
	}
	r.queue = nil
	r.ln.Close()
}

func (r *goRelay) readLoop() {
	buf := make([]byte, 64<<10)
	var in []byte
	for {
		n, err := r.up.Read(buf)
		if err != nil {
			r.mu.Lock()
			r.failLocked(fmt.Errorf("upstream read: %w", err))
			r.mu.Unlock()
			return
		}
		in = append(in, buf[:n]...)
		i := 0
		r.mu.Lock()
		for len(r.queue) > 0 {
			e := replyEnd(in, i)
			if e == -2 {
				r.failLocked(errors.New("upstream: malformed reply"))
				r.mu.Unlock()
				return
			}
			if e < 0 {
				break
			}
			q := r.queue[0]
			q.reply = append(q.reply, in[i:e]...)
			i = e
			if q.n--; q.n == 0 {
				r.queue = r.queue[1:]
				r.sent--
				q.done <- struct{}{}
			}
		}
		if len(r.wbuf) > 0 && !r.writing {
			r.writeLocked()
		}
		r.mu.Unlock()
		in = append(in[:0], in[i:]...)
	}
}
