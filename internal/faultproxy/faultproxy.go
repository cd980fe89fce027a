// Package faultproxy is a TCP relay for tests that sits between a client (the proxy under test)
// and a server (redis-server) and breaks the stream from the server on demand: it delays it,
// stalls it, cuts a connection in the middle of a reply with a reset, or sends half of what it
// read and then resets. Every connection gets the fault that is set when its bytes pass.
package faultproxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault is what happens to the server's bytes on their way to the client.
type Fault int

const (
	// Pass relays as is.
	Pass Fault = iota
	// Delay holds each chunk for Relay.Delay before it passes.
	Delay
	// Stall relays nothing until the fault changes.
	Stall
	// Reset relays half of the next chunk, then resets both sides of that connection.
	Reset
)

// Relay is a running fault relay.
type Relay struct {
	Addr  string
	Delay time.Duration

	fault  atomic.Int32
	resets atomic.Int64
	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// Start relays a free loopback port to server until the test ends.
func Start(t testing.TB, server string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{Addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept(server)
	t.Cleanup(r.close)
	return r
}

// Set changes the fault for the bytes that pass from now on.
func (r *Relay) Set(f Fault) { r.fault.Store(int32(f)) }

// Resets is how many connections Reset has cut.
func (r *Relay) Resets() int64 { return r.resets.Load() }

func (r *Relay) accept(server string) {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", server)
		if err != nil {
			c.Close()
			continue
		}
		r.track(c, s)
		r.wg.Add(2)
		go func() { defer r.wg.Done(); r.up(c, s) }()
		go func() { defer r.wg.Done(); r.down(s, c) }()
	}
}

func (r *Relay) track(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		r.conns[c] = struct{}{}
	}
}

// up copies the client's bytes to the server as they come.
func (r *Relay) up(c, s net.Conn) {
	_, _ = io.Copy(s, c)
	s.Close()
	c.Close()
}

// down copies the server's bytes to the client through the fault.
func (r *Relay) down(s, c net.Conn) {
	defer s.Close()
	defer c.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		for n > 0 && Fault(r.fault.Load()) == Stall {
			time.Sleep(5 * time.Millisecond)
		}
		switch Fault(r.fault.Load()) {
		case Delay:
			time.Sleep(r.Delay)
		case Reset:
			if n > 0 {
				_, _ = c.Write(buf[:max(n/2, 1)])
				r.resets.Add(1)
				reset(c)
				reset(s)
				return
			}
		}
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// reset closes c with a TCP reset rather than a clean end.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

func (r *Relay) close() {
	r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
