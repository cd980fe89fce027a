//go:build linux

package resp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// polledConn is a Conn on p's Poller with its client end.
func polledConn(t *testing.T, p *polledPair) (client net.Conn, c *Conn) {
	t.Helper()
	client, server := p.pair(t)
	c = NewConn(server, DefaultLimits())
	if !c.Poll(p.Poller) {
		t.Fatal("Poll refused a TCP connection")
	}
	t.Cleanup(func() {
		client.Close()
		c.Close()
	})
	return client, c
}

// readResult is one Read's outcome, from a goroutine.
type readResult struct {
	b   []byte
	err error
}

func goRead(c *Conn) chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		ch <- readResult{buf[:n], err}
	}()
	return ch
}

func waitRead(t *testing.T, ch chan readResult) readResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("a read waiting for the Poller was not woken")
		return readResult{}
	}
}

// TestPollWakes: a read that waits for bytes is woken by their arrival, by a read deadline
// (now, or one that passes later), by Close from another goroutine, and by the peer's close.
func TestPollWakes(t *testing.T) {
	p := newPolledPair(t)

	t.Run("bytes", func(t *testing.T) {
		client, c := polledConn(t, p)
		ch := goRead(c)
		time.Sleep(20 * time.Millisecond) // the read waits (nothing to read yet)
		client.Write([]byte("*1\r\n$4\r\nPING\r\n"))
		if r := waitRead(t, ch); r.err != nil || string(r.b) != "*1\r\n$4\r\nPING\r\n" {
			t.Fatalf("got %q, %v", r.b, r.err)
		}
		// The next command, after a read that took everything: waits, and is woken again.
		ch = goRead(c)
		time.Sleep(20 * time.Millisecond)
		client.Write([]byte("PING\r\n"))
		if r := waitRead(t, ch); r.err != nil || string(r.b) != "*1\r\n$4\r\nPING\r\n" {
			t.Fatalf("got %q, %v", r.b, r.err)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		client, c := polledConn(t, p)
		ch := goRead(c)
		time.Sleep(20 * time.Millisecond)
		c.SetReadDeadline(time.Now()) // as the shutdown drain ends a client between batches
		r := waitRead(t, ch)
		var ne net.Error
		if !errors.Is(r.err, os.ErrDeadlineExceeded) || !errors.As(r.err, &ne) || !ne.Timeout() {
			t.Fatalf("got %q, %v; want a timeout", r.b, r.err)
		}
		// Not sticky: a later deadline lets the connection read on, and ends a wait when it passes.
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		start := time.Now()
		if r := waitRead(t, goRead(c)); !errors.Is(r.err, os.ErrDeadlineExceeded) || time.Since(start) < 40*time.Millisecond {
			t.Fatalf("got %v after %v; want a timeout after 50ms", r.err, time.Since(start))
		}
		c.SetReadDeadline(time.Time{})
		client.Write([]byte("PING\r\n"))
		if r := waitRead(t, goRead(c)); r.err != nil || string(r.b) != "*1\r\n$4\r\nPING\r\n" {
			t.Fatalf("after the deadline was cleared: %q, %v", r.b, r.err)
		}
	})

	t.Run("close", func(t *testing.T) {
		_, c := polledConn(t, p)
		ch := goRead(c)
		time.Sleep(20 * time.Millisecond)
		c.Close() // CLIENT KILL, the idle timeout
		if r := waitRead(t, ch); !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("got %q, %v; want net.ErrClosed", r.b, r.err)
		}
	})

	t.Run("peer closes", func(t *testing.T) {
		client, c := polledConn(t, p)
		ch := goRead(c)
		time.Sleep(20 * time.Millisecond)
		client.Write([]byte("PING\r\n"))
		client.Close()
		var got []byte
		for {
			r := waitRead(t, ch)
			got = append(got, r.b...)
			if r.err != nil {
				if r.err != io.EOF || string(got) != "*1\r\n$4\r\nPING\r\n" {
					t.Fatalf("got %q, %v; want the PING, then EOF", got, r.err)
				}
				break
			}
			ch = goRead(c)
		}
	})

	// Connections closed above are off the Poller.
	p.mu.RLock()
	defer p.mu.RUnlock()
	for fd, r := range p.conns {
		if r != nil {
			t.Errorf("fd %d still on the Poller after its connection closed", fd)
		}
	}
}

// TestPollFullRead: a read that fills the buffer may have left bytes in the socket, which raise no
// new event: the connection must read again before it waits. One 1 MiB command written at once
// and nothing after it must arrive whole.
func TestPollFullRead(t *testing.T) {
	p := newPolledPair(t)
	client, c := polledConn(t, p)
	cmd := mbulk("SET", "k", strings.Repeat("v", 1<<20))
	go client.Write([]byte(cmd))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	buf := make([]byte, 64<<10)
	for len(got) < len(cmd) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v", len(got), len(cmd), err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != cmd {
		t.Fatal("the command came through changed")
	}
}

// TestPollManyConns: 64 connections at once, each sending 300 commands in random pieces with
// pauses between some, through redcon's reader: each gets exactly its own commands.
func TestPollManyConns(t *testing.T) {
	p := newPolledPair(t)
	const conns, cmds = 64, 300
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		client, c := polledConn(t, p)
		var in bytes.Buffer
		for j := range cmds {
			if j%7 == 3 {
				fmt.Fprintf(&in, "SET c%d:%d %d\r\n", i, j, j) // inline
			} else {
				in.WriteString(mbulk("SET", fmt.Sprintf("c%d:%d", i, j), strings.Repeat("x", j)))
			}
		}
		want, _ := NewNormalizer(DefaultLimits()).Feed(nil, in.Bytes())
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			b := in.Bytes()
			for len(b) > 0 {
				n := min(len(b), 1+rng.IntN(700))
				if _, err := client.Write(b[:n]); err != nil {
					errs <- err
					return
				}
				b = b[n:]
				if rng.IntN(10) == 0 {
					time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
				}
			}
		})
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			var got []byte
			buf := make([]byte, 4096)
			for len(got) < len(want) {
				n, err := c.Read(buf)
				if err != nil {
					errs <- fmt.Errorf("conn %d after %d of %d bytes: %w", i, len(got), len(want), err)
					return
				}
				got = append(got, buf[:n]...)
			}
			if !bytes.Equal(got, want) {
				errs <- fmt.Errorf("conn %d: commands changed", i)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestPollStamped: a polled connection that keeps receive times (ordering) reads with recvmsg
// through the Poller and reports the kernel's receive time of its bytes.
func TestPollStamped(t *testing.T) {
	p := newPolledPair(t)
	StampListener(p.ln)
	client, c := polledConn(t, p)
	c.Stamp()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	// The kernel turns receive timestamps on host-wide some time after the first socket asks
	// (deferred work); segments received before carry none. Wait until a read has one.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		before := time.Now().UnixNano()
		client.Write([]byte("PING\r\n"))
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "*1\r\n$4\r\nPING\r\n" {
			t.Fatalf("got %q, %v", buf[:n], err)
		}
		if at := c.Arrival(); at != 0 {
			if at < before-int64(time.Millisecond) || at > time.Now().UnixNano() {
				t.Fatalf("receive time %d outside the write's window [%d, now]", at, before)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no receive timestamps on this host after 5 s")
		}
	}
}

// TestPollStorm: 600 connections (more than one epoll_wait's worth of events, and many turns'
// worth of laterBatch) whose readers wait on the Poller each get a command and a hang-up at
// once, while another connection sends one too. The Poller queues the hang-ups to wake a few a
// turn: every reader must still get its command and then its end, none left queued.
func TestPollStorm(t *testing.T) {
	p := newPolledPair(t)
	old, oc := polledConn(t, p)
	const n = 600
	clients := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range clients {
		client, c := polledConn(t, p)
		clients[i] = client
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil || string(got) != mbulk("GET", fmt.Sprint("k", i)) {
				errs <- fmt.Errorf("connection %d read %q, %v", i, got, err)
			}
		})
	}
	time.Sleep(50 * time.Millisecond) // every reader has found nothing and waits for the Poller
	// The Poller's loop stops at its lock while everything comes in: then one harvest takes
	// all 600 hang-ups, and no event comes after them to wake the loop again.
	p.Poller.mu.Lock()
	for i, client := range clients {
		if _, err := client.Write([]byte(mbulk("GET", fmt.Sprint("k", i)))); err != nil {
			p.Poller.mu.Unlock()
			t.Fatal(err)
		}
		client.(*net.TCPConn).CloseWrite()
	}
	time.Sleep(50 * time.Millisecond)
	p.Poller.mu.Unlock()
	if _, err := old.Write([]byte(mbulk("PING"))); err != nil {
		t.Fatal(err)
	}
	if r := waitRead(t, goRead(oc)); r.err != nil || string(r.b) != mbulk("PING") {
		t.Fatalf("the connection that stays read %q, %v", r.b, r.err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
