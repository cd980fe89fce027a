package proxy

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestCommandTimeout: a Redis that stops answering holds a shared connection's
// clients for CommandTimeout at most: the command gets an error naming the bound, and so does
// a command of another client queued behind it on that connection, in order (CLIENT PAUSE
// stands in for a stopped Redis: it answers nothing for the pause); once Redis
// answers again, new clients are served.
func TestCommandTimeout(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up, func(o *Options) { o.CommandTimeout = 300 * time.Millisecond; o.PoolSize = 1 })
	a, b := dialRaw(t, s.Addr().String()), dialRaw(t, s.Addr().String())
	a.do("PING") // both on the pool's one connection
	b.do("PING")
	if _, err := up.Do("CLIENT", "PAUSE", "1500", "ALL"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a.send(encode("GET", "k"))
	time.Sleep(50 * time.Millisecond)
	b.send(encode("GET", "k"))
	got := string(a.replies(1))
	took := time.Since(start)
	const want = "-ERR upstream connection lost: no progress within 300ms (upstream.command_timeout)\r\n"
	if got != want {
		t.Fatalf("the stalled command got %q, want %q", got, want)
	}
	if took < 300*time.Millisecond || took > 1200*time.Millisecond {
		t.Errorf("the error came after %v, want about 300ms", took)
	}
	if got := string(b.replies(1)); got != want {
		t.Errorf("the command queued behind it got %q", got)
	}
	time.Sleep(1500 * time.Millisecond) // the pause ends
	c := dialRaw(t, s.Addr().String())
	if got := c.do("SET", "k", "v"); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("after the stall: %q", got)
	}
	// A client's connection of its own is not bounded while it blocks.
	d := dialRaw(t, s.Addr().String())
	d.send(encode("BLPOP", "tlist", "1"))
	if got := string(d.replies(1)); got != "*-1\r\n" {
		t.Errorf("BLPOP past the bound: %q", got)
	}
}

// TestCommandTimeoutIdle: an idle shared connection waits for nothing, so idle spells of any
// length are no stall. Commands spaced at most of the bound apart, and after idle spells of
// several bounds, are answered on the same upstream connection, which is never failed.
func TestCommandTimeoutIdle(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up, func(o *Options) { o.CommandTimeout = 200 * time.Millisecond; o.PoolSize = 1 })
	c := dialRaw(t, s.Addr().String())
	c.do("PING")
	direct := dialRaw(t, up.Addr())
	// incrConns are the ids of Redis' connections whose last command was INCR: the shared one
	// (the proxy's own work at start, which dials connections of its own meanwhile, runs other
	// commands).
	incrConns := func() []string {
		var ids []string
		for _, l := range strings.Split(direct.do("CLIENT", "LIST"), "\n") {
			if strings.Contains(l, " cmd=incr ") {
				ids = append(ids, strings.Fields(l)[0])
			}
		}
		return ids
	}
	var first []string
	for i, gap := range []time.Duration{180, 30, 30, 30, 190, 650, 10, 450, 60} {
		time.Sleep(gap * time.Millisecond)
		if got := c.do("INCR", "n"); got != ":"+strconv.Itoa(i+1)+"\r\n" {
			t.Fatalf("command %d after %v: %q", i, gap*time.Millisecond, got)
		}
		if i == 0 {
			first = incrConns()
		}
	}
	if after := incrConns(); len(first) != 1 || !slices.Equal(after, first) {
		t.Errorf("the shared connection was replaced (%v, then %v): an idle deadline was taken for a stall", first, after)
	}
}
