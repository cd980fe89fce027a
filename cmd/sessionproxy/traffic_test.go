package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestLargeValues: values from 0 bytes to 2 MiB (binary, with CR LF inside) go up and come back
// byte for byte, on the shared path and on a dedicated connection, alone and pipelined. Sizes
// straddle the proxy's 1 MiB buffer-reuse thresholds; larger ones only slow the race-enabled
// test client down.
func TestLargeValues(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr())
	value := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + i/251) // every byte value, CR and LF included
		}
		return string(b)
	}
	values := map[int]string{}
	sizes := []int{0, 1, 100 << 10, 1<<20 + 1, 2<<20 + 3}
	for _, n := range sizes {
		values[n] = value(n)
	}
	for _, mode := range []struct{ name, setup string }{{"shared", ""}, {"dedicated", "HELLO 2"}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			c := dialRESP(t, p.Addr)
			if mode.setup != "" {
				c.do(strings.Fields(mode.setup)...)
			}
			for _, n := range sizes {
				v := values[n]
				key := fmt.Sprintf("big:%s:%d", mode.name, n)
				if r := c.do("SET", key, v); r != "+OK\r\n" {
					t.Fatalf("SET %d bytes: %q", n, clip(r))
				}
				if r := c.do("GET", key); r != fmt.Sprintf("$%d\r\n%s\r\n", n, v) {
					t.Fatalf("GET of %d bytes came back different (%d bytes: %q)", n, len(r), clip(r))
				}
			}
			// All at once: one pipeline of SETs and GETs.
			var req, want bytes.Buffer
			for _, n := range sizes {
				v := values[n]
				key := fmt.Sprintf("bigpipe:%s:%d", mode.name, n)
				req.Write(encode("SET", key, v))
				req.Write(encode("GET", key))
				want.WriteString("+OK\r\n")
				fmt.Fprintf(&want, "$%d\r\n%s\r\n", n, v)
			}
			c.send(req.Bytes())
			var got strings.Builder
			for range 2 * len(sizes) {
				r, err := c.reply(20 * time.Second)
				if err != nil {
					t.Fatalf("pipelined reply: %v", err)
				}
				got.WriteString(r)
			}
			if got.String() != want.String() {
				t.Fatalf("pipelined replies differ (%d bytes, want %d)", got.Len(), want.Len())
			}
		})
	}
}

// TestAbandonedPipelines: clients that send a large pipeline and hang up without reading the
// replies do not disturb the clients that share upstream connections with them.
func TestAbandonedPipelines(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	// One shared connection, so every client's commands go through the same one.
	p := startProxy(t, srv.Addr(), "SESSIONPROXY_UPSTREAM_POOL_SIZE=1")

	var wg sync.WaitGroup
	errs := make(chan string, 100)
	stop := make(chan struct{})
	// Well-behaved clients: pipelines of INCR on their own key, every reply checked.
	for i := range 3 {
		c := dialRESP(t, p.Addr)
		wg.Add(1)
		go func() { // no t.Fatal here: failures go to errs
			defer wg.Done()
			key := fmt.Sprintf("ab:good:%d", i)
			var req []byte
			for range 200 {
				req = append(req, encode("INCR", key)...)
			}
			next := 1
			for b := 0; b < 200; b++ {
				select {
				case <-stop:
					return
				default:
				}
				_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.nc.Write(req); err != nil {
					errs <- fmt.Sprintf("client %d: send: %v", i, err)
					return
				}
				for range 200 {
					r, err := c.reply(10 * time.Second)
					if err != nil || r != fmt.Sprintf(":%d\r\n", next) {
						errs <- fmt.Sprintf("client %d: INCR reply %q, %v; want %d", i, r, err, next)
						return
					}
					next++
				}
			}
		}()
	}
	// Rude clients: 20000 commands, then close without reading.
	var big []byte
	for range 20000 {
		big = append(big, encode("INCR", "ab:rude")...)
	}
	for range 10 {
		c := dialRESP(t, p.Addr)
		c.send(big)
		c.close()
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if !p.alive() {
		t.Fatal("proxy exited")
	}
	c := dialRESP(t, p.Addr)
	if r := c.do("PING"); r != "+PONG\r\n" {
		t.Fatalf("PING afterwards: %q", r)
	}
}
