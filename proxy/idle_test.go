package proxy

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessionproxy/sessionproxy/internal/promtest"
	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestIdleTimeout: with IdleTimeout, a client idle that long is disconnected without a byte, as
// Redis' `timeout` disconnects a direct one; a client that keeps sending, a subscriber and a
// client blocked in BLPOP stay, as with Redis.
func TestIdleTimeout(t *testing.T) {
	up := redistest.Start(t, "--loglevel", "verbose")
	reg := prometheus.NewRegistry()
	if _, err := up.Do("CONFIG", "SET", "timeout", "1"); err != nil {
		t.Fatal(err)
	}
	// Started after Redis' timeout is set: the proxy reads it at start (and every 30 s), and
	// does not use a connection idle about that long (TestUpstreamIdleLimit).
	s := startProxy(t, up, func(o *Options) { o.IdleTimeout, o.Registerer = time.Second, reg })
	for _, side := range []struct{ name, addr string }{{"direct", up.Addr()}, {"proxy", s.Addr().String()}} {
		t.Run(side.name, func(t *testing.T) {
			if _, err := up.Do("CONFIG", "SET", "timeout", "1"); err != nil {
				t.Fatal(err)
			}
			idle, busy, sub, blocked := dialRaw(t, side.addr), dialRaw(t, side.addr), dialRaw(t, side.addr), dialRaw(t, side.addr)
			idle.do("PING")
			sub.do("SUBSCRIBE", "idlechan")
			blocked.send(encode("BLPOP", "idlelist", "0"))
			// A client sending one command slowly is not idle while its bytes come in.
			slow := dialRaw(t, side.addr)
			cmd := encode("SET", "slowkey", strings.Repeat("s", 40))
			slowDone := make(chan string, 1)
			go func() {
				for i := 0; i < len(cmd); i += 5 {
					if _, err := slow.nc.Write(cmd[i:min(i+5, len(cmd))]); err != nil {
						slowDone <- err.Error()
						return
					}
					time.Sleep(300 * time.Millisecond)
				}
				_ = slow.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				r, err := slow.br.ReadString('\n')
				if err != nil {
					r = err.Error()
				}
				slowDone <- r
			}()
			deadline := time.Now().Add(3500 * time.Millisecond)
			for time.Now().Before(deadline) {
				if got := busy.do("PING"); got != "+PONG\r\n" {
					t.Fatalf("a busy client: %q", got)
				}
				time.Sleep(300 * time.Millisecond)
			}
			if got := <-slowDone; got != "+OK\r\n" {
				t.Errorf("a client sending its command slowly: %q", got)
			}
			if got, err := idle.readAllUntilClose(2 * time.Second); err != io.EOF || len(got) > 0 {
				t.Errorf("idle client: read %q, err %v; want closed without a byte", got, err)
			}
			pub := dialRaw(t, side.addr)
			if got := pub.do("PUBLISH", "idlechan", "hi"); got != ":1\r\n" {
				t.Errorf("the subscriber is gone: PUBLISH %q", got)
			}
			if got := string(sub.replies(1)); got != "*3\r\n$7\r\nmessage\r\n$8\r\nidlechan\r\n$2\r\nhi\r\n" {
				t.Errorf("subscriber got %q", got)
			}
			// The blocked client has outlived Redis' timeout. Turn it off before waking it:
			// Redis may close a client it has just unblocked as idle when its cron runs in the
			// same event-loop turn as the LPUSH, before the reply is written (a direct client
			// then reads EOF; CI saw "Closing idle client" 1 ms after the LPUSH).
			if _, err := up.Do("CONFIG", "SET", "timeout", "0"); err != nil {
				t.Fatal(err)
			}
			pub.do("LPUSH", "idlelist", "x")
			if got := string(blocked.replies(1)); got != "*2\r\n$8\r\nidlelist\r\n$1\r\nx\r\n" {
				t.Errorf("blocked client got %q\nRedis log:\n%s", got, up.Log())
			}
		})
	}
	if n, _, err := promtest.Sum(reg, "sessionproxy_client_disconnected_total", "reason=idle_timeout"); err != nil || n < 1 {
		t.Errorf("disconnected_total{reason=idle_timeout} = %v (%v)", n, err)
	}
}

// TestUpstreamIdleLimit: with Redis' own `timeout` set, the proxy does not send a command on a
// connection idle for about that long (Redis may close it just as the command arrives, and a
// client would see "connection lost"): it replaces the connection first, shared or spare.
func TestUpstreamIdleLimit(t *testing.T) {
	up := redistest.Start(t)
	if _, err := up.Do("CONFIG", "SET", "timeout", "1"); err != nil {
		t.Fatal(err)
	}
	s := startProxy(t, up)
	conns := func() map[string]string { // id -> last command
		list, err := up.DoText("CLIENT", "LIST")
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
			var id, cmd string
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "id=") {
					id = f
				} else if strings.HasPrefix(f, "cmd=") {
					cmd = f
				}
			}
			m[id] = cmd
		}
		return m
	}
	// newFor reports whether a connection that ran cmd last is not among before.
	newFor := func(before, after map[string]string, cmd string) bool {
		for id, last := range after {
			if _, old := before[id]; !old && last == cmd {
				return true
			}
		}
		return false
	}
	for round := range 3 {
		c := dialRaw(t, s.Addr().String()) // a new one each round: BLPOP gives it a connection of its own
		if got := c.do("PING"); got != "+PONG\r\n" {
			t.Fatalf("round %d: PING %q", round, got)
		}
		before := conns()
		time.Sleep(700 * time.Millisecond) // past the stale bound (0.5 s), before Redis' 1 s
		if got := c.do("ECHO", "x"); got != "$1\r\nx\r\n" {
			t.Fatalf("round %d: ECHO %q", round, got)
		}
		if got := c.do("BLPOP", "nolist", "0.01"); got != "*-1\r\n" {
			t.Fatalf("round %d: BLPOP %q", round, got)
		}
		after := conns()
		if !newFor(before, after, "cmd=echo") || !newFor(before, after, "cmd=blpop") {
			t.Fatalf("round %d: a connection idle 0.7 s was used (before %v, after %v)", round, before, after)
		}
		c.nc.Close()
	}
}
