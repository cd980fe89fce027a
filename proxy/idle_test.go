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
	up := redistest.Start(t)
	reg := prometheus.NewRegistry()
	s := startProxy(t, up, func(o *Options) { o.IdleTimeout, o.Registerer = time.Second, reg })
	if _, err := up.Do("CONFIG", "SET", "timeout", "1"); err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct{ name, addr string }{{"direct", up.Addr()}, {"proxy", s.Addr().String()}} {
		t.Run(side.name, func(t *testing.T) {
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
			pub.do("LPUSH", "idlelist", "x")
			if got := string(blocked.replies(1)); got != "*2\r\n$8\r\nidlelist\r\n$1\r\nx\r\n" {
				t.Errorf("blocked client got %q", got)
			}
		})
	}
	if n, _, err := promtest.Sum(reg, "sessionproxy_client_disconnected_total", "reason=idle_timeout"); err != nil || n < 1 {
		t.Errorf("disconnected_total{reason=idle_timeout} = %v (%v)", n, err)
	}
}
