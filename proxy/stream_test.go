package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessionproxy/sessionproxy/internal/promtest"
	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestStreamedReplies: replies large enough to be streamed (stream.go) reach the client with
// the same bytes, in the same order, as from Redis, around commands the proxy answers itself,
// a session write (not streamed) and small replies, over several batches.
func TestStreamedReplies(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up)
	big := strings.Repeat("v", streamPart+1000)
	var pipeline []byte
	pipeline = append(pipeline, encode("SET", "big", big)...)
	for i := range 6 {
		pipeline = append(pipeline, encode("GET", "big")...)
		switch i {
		case 1:
			pipeline = append(pipeline, encode("CLIENT", "SETNAME", "streamer")...)
		case 2:
			pipeline = append(pipeline, encode("HSET", "session:st", "userid", "5")...)
		case 3:
			pipeline = append(pipeline, encode("CLIENT", "GETNAME")...)
		}
		pipeline = append(pipeline, encode("PING")...)
	}
	pipeline = append(pipeline, encode("GET", "nope")...)
	const replies = 1 + 6*2 + 3 + 1
	var wants [2][]byte
	for round, addr := range []string{up.Addr(), s.Addr().String()} {
		if _, err := up.Do("DEL", "session:st"); err != nil {
			t.Fatal(err)
		}
		c := dialRaw(t, addr)
		for k := range 2 { // a second batch on the same connection
			c.send(pipeline)
			got := c.replies(replies)
			want := wants[k]
			if round == 0 {
				wants[k] = got
			} else if !bytes.Equal(got, want) {
				for i := range got {
					if got[i] != want[i] {
						t.Logf("first difference at %d: got %q, want %q", i, got[max(0, i-40):min(len(got), i+60)], want[max(0, i-40):min(len(want), i+60)])
						break
					}
				}
				t.Fatalf("through the proxy: %d bytes %q..., want %d bytes %q...", len(got), clip(got), len(want), clip(want))
			}
		}
	}
	if got, err := up.DoText("SMEMBERS", "user:5"); err != nil || !strings.Contains(got, "st") {
		t.Errorf("the session write in the pipeline was not indexed: %q %v", got, err)
	}
}

// TestOutputBufferLimit: a client that pipelines far more reply bytes than it reads is
// disconnected once the replies the proxy holds for it pass OutputBufferLimit, as Redis
// disconnects it past client-output-buffer-limit, while other clients go on.
func TestOutputBufferLimit(t *testing.T) {
	up := redistest.Start(t)
	reg := prometheus.NewRegistry()
	s := startProxy(t, up, func(o *Options) { o.OutputBufferLimit, o.Registerer = 1<<20, reg })
	if _, err := up.Do("SET", "v100k", strings.Repeat("x", 100<<10)); err != nil {
		t.Fatal(err)
	}
	var pipeline []byte
	for range 1000 { // 100 MB of replies
		pipeline = append(pipeline, encode("GET", "v100k")...)
	}
	for _, side := range []struct{ name, addr string }{{"direct", up.Addr()}, {"proxy", s.Addr().String()}} {
		t.Run(side.name, func(t *testing.T) {
			// Redis' own limit for the direct client only: the proxy's shared connection to Redis
			// is a normal client too, and would be cut under everyone on it.
			limit := "normal 0 0 0"
			if side.name == "direct" {
				limit = "normal 1mb 0 0"
			}
			if _, err := up.Do("CONFIG", "SET", "client-output-buffer-limit", limit); err != nil {
				t.Fatal(err)
			}
			hog, other := dialRaw(t, side.addr), dialRaw(t, side.addr)
			hog.send(pipeline)
			time.Sleep(500 * time.Millisecond) // not reading meanwhile
			if got := other.do("PING"); got != "+PONG\r\n" {
				t.Errorf("another client: %q", got)
			}
			_ = hog.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := io.Copy(io.Discard, hog.br)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) || n >= 100<<20 {
				t.Errorf("the client that did not read got %d bytes (err %v); want it disconnected early", n, err)
			}
		})
	}
	if n, _, err := promtest.Sum(reg, "sessionproxy_client_disconnected_total", "reason=output_buffer"); err != nil || n != 1 {
		t.Errorf("disconnected_total{reason=output_buffer} = %v (%v)", n, err)
	}
}

// TestInputMemoryLimit: the bytes large incomplete commands hold are bounded for all clients
// together: the client whose command takes them past InputMemoryLimit is disconnected (without
// a reply, as Redis' client eviction), the others keep theirs, and the held bytes are given back.
func TestInputMemoryLimit(t *testing.T) {
	up := redistest.Start(t)
	reg := prometheus.NewRegistry()
	// What is counted is the memory held (chunks of up to 1 MiB, a 256 KiB read buffer), a bit
	// more than the bytes: 2.5 MiB in one command fits under 5 MiB, two such do not.
	s := startProxy(t, up, func(o *Options) { o.InputMemoryLimit, o.Registerer = 5<<20, reg })
	held := func() float64 {
		n, _, err := promtest.Sum(reg, "sessionproxy_client_input_held_bytes")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitHeld := func(want func(float64) bool, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !want(held()) {
			if time.Now().After(deadline) {
				t.Fatalf("input_held_bytes %v, want %s", held(), what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	value := strings.Repeat("a", 2500<<10)
	full := encode("SET", "first", value)
	a, b, other := dialRaw(t, s.Addr().String()), dialRaw(t, s.Addr().String()), dialRaw(t, s.Addr().String())
	a.send(full[:2<<20]) // 2 MiB of a 2.5 MiB command: held
	waitHeld(func(n float64) bool { return n >= 2<<20 }, ">= 2 MiB")
	b.send(encode("SET", "second", strings.Repeat("b", 4<<20))[:3<<20]) // past 5 MiB in all
	// Closed with bytes of its unread: a reset, or an end.
	if got, err := b.readAllUntilClose(5 * time.Second); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) || len(got) > 0 {
		t.Fatalf("the client past the limit: read %q, %v; want closed without a reply", got, err)
	}
	if got := other.do("PING"); got != "+PONG\r\n" {
		t.Errorf("another client: %q", got)
	}
	a.send(full[2<<20:])
	if got := string(a.replies(1)); got != "+OK\r\n" {
		t.Errorf("the client under the limit: %q", got)
	}
	waitHeld(func(n float64) bool { return n == 0 }, "0 once the commands are whole or gone")
	if n, _, err := promtest.Sum(reg, "sessionproxy_client_disconnected_total", "reason=input_memory"); err != nil || n != 1 {
		t.Errorf("disconnected_total{reason=input_memory} = %v (%v)", n, err)
	}
	if v, err := up.Do("STRLEN", "first"); err != nil || v != fmt.Sprintf(":%d", len(value)) {
		t.Errorf("STRLEN first = %q (%v)", v, err)
	}
}
