package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestGoRedis drives two proxies with go-redis v9 clients: one in front of a plain
// redis-server and one in front of a redis-server with --requirepass. Every check runs with a
// Protocol 2 and a Protocol 3 client, and with a RESP2 client that gets no HELLO (see grKinds):
// basics, a pipeline of 1000, TxPipelined, WATCH with a conflicting writer (redis.TxFailedErr),
// pub/sub order, BLPOP woken by LPUSH, two DBs, AUTH.
func TestGoRedis(t *testing.T) {
	t.Parallel()
	const password = "e2e-secret"
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr())
	authSrv := redistest.Start(t, "--requirepass", password)
	ap := startProxy(t, authSrv.Addr())

	// First, while nothing else has used this proxy: the no-HELLO client stays on the shared
	// path (the proxy sees no HELLO and opens no dedicated connection).
	t.Run("no_hello_is_shared", func(t *testing.T) {
		ctx := grCtx(t, 10*time.Second)
		c := grClient(t, p.Addr, grKinds[2], 0, "")
		if err := c.Set(ctx, "gr:shared", "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
		m := scrapeMetrics(t, p.HTTP)
		if m[`sessionproxy_client_commands_total{cmd="hello"}`] != 0 || m[`sessionproxy_upstream_dedicated_connections`] != 0 {
			t.Fatalf("hello commands %v, dedicated connections %v; want 0 and 0",
				m[`sessionproxy_client_commands_total{cmd="hello"}`], m[`sessionproxy_upstream_dedicated_connections`])
		}
	})
	for _, tc := range []struct {
		name string
		f    func(t *testing.T, addr string)
	}{
		{"basic", grBasic},
		{"pipeline_1000", grPipeline1000},
		{"tx_pipelined", grTxPipelined},
		{"watch_conflict", grWatchConflict},
		{"pubsub", grPubSub},
		{"blpop_woken_by_lpush", grBLPopWokenByLPush},
		{"two_dbs", grTwoDBs},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, p.Addr) })
	}
	t.Run("auth", func(t *testing.T) { grAuth(t, ap.Addr, password) })
	if !p.alive() || !ap.alive() {
		t.Error("a proxy exited during the go-redis tests")
	}
}

// grKind is how a test client talks to the proxy.
type grKind struct {
	name    string
	proto   int  // go-redis Options.Protocol
	noHello bool // the client sees "unknown command" for HELLO and falls back to plain RESP2
}

// grKinds: go-redis as configured (HELLO 2 or HELLO 3 first, which moves the client to a
// dedicated upstream connection), and a RESP2 client without HELLO, like an older client
// library, which stays on the proxy's shared connections.
var grKinds = []grKind{{"resp2", 2, false}, {"resp3", 3, false}, {"resp2_no_hello", 2, true}}

// grClient is a go-redis client of the proxy that never retries, so every failure shows.
func grClient(t *testing.T, addr string, kind grKind, db int, password string) *redis.Client {
	t.Helper()
	opts := &redis.Options{
		Addr: addr, Protocol: kind.proto, DB: db, Password: password,
		DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		MaxRetries: -1, PoolSize: 4,
	}
	if kind.noHello {
		opts.Dialer = noHelloDial
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// noHelloDial is a go-redis Dialer for noHelloConn connections.
func noHelloDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &noHelloConn{Conn: nc}, nil
}

// noHelloConn answers the HELLO that go-redis sends first on a connection itself, as a Redis
// without HELLO would, instead of sending it on; everything else passes through untouched.
type noHelloConn struct {
	net.Conn
	mu      sync.Mutex
	started bool
	pending []byte // the fabricated HELLO reply, served before any upstream bytes
}

var noHelloReply = []byte("-ERR unknown command 'HELLO', with args beginning with: \r\n")

func (c *noHelloConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	first := !c.started
	c.started = true
	c.mu.Unlock()
	if first {
		if end, ok := firstCommandEnd(b); ok && isHello(b[:end]) {
			c.mu.Lock()
			c.pending = append(c.pending, noHelloReply...)
			c.mu.Unlock()
			if end < len(b) {
				if _, err := c.Conn.Write(b[end:]); err != nil {
					return 0, err
				}
			}
			return len(b), nil
		}
	}
	return c.Conn.Write(b)
}

func (c *noHelloConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

// firstCommandEnd returns the end of the first RESP multibulk command in b.
func firstCommandEnd(b []byte) (int, bool) {
	line := func(at int) (string, int, bool) {
		i := bytes.Index(b[at:], []byte("\r\n"))
		if i < 0 {
			return "", 0, false
		}
		return string(b[at : at+i]), at + i + 2, true
	}
	hdr, at, ok := line(0)
	if !ok || !strings.HasPrefix(hdr, "*") {
		return 0, false
	}
	n, err := strconv.Atoi(hdr[1:])
	if err != nil {
		return 0, false
	}
	for range n {
		var h string
		if h, at, ok = line(at); !ok || !strings.HasPrefix(h, "$") {
			return 0, false
		}
		l, err := strconv.Atoi(h[1:])
		if err != nil || at+l+2 > len(b) {
			return 0, false
		}
		at += l + 2
	}
	return at, true
}

func isHello(cmd []byte) bool {
	_, rest, _ := bytes.Cut(cmd, []byte("\r\n"))
	_, rest, _ = bytes.Cut(rest, []byte("\r\n"))
	return len(rest) >= 5 && strings.EqualFold(string(rest[:5]), "HELLO")
}

// grCtx is a context bounded well inside the parent test's timeout.
func grCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// grEachKind runs f once per client kind, in parallel, with a key prefix of its own.
func grEachKind(t *testing.T, f func(t *testing.T, kind grKind, prefix string)) {
	grForKinds(t, true, f)
}

func grForKinds(t *testing.T, parallel bool, f func(t *testing.T, kind grKind, prefix string)) {
	for _, kind := range grKinds {
		t.Run(kind.name, func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			f(t, kind, t.Name()+":")
		})
	}
}

func grBasic(t *testing.T, addr string) {
	grEachKind(t, func(t *testing.T, kind grKind, p string) {
		ctx := grCtx(t, 20*time.Second)
		c := grClient(t, addr, kind, 0, "")
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		if got, err := c.Ping(ctx).Result(); err != nil || got != "PONG" {
			t.Fatalf("PING: %q, %v", got, err)
		}
		must(c.Set(ctx, p+"s", "hello", 0).Err())
		if got, err := c.Get(ctx, p+"s").Result(); err != nil || got != "hello" {
			t.Fatalf("GET: %q, %v", got, err)
		}
		if _, err := c.Get(ctx, p+"missing").Result(); !errors.Is(err, redis.Nil) {
			t.Fatalf("GET missing: %v, want redis.Nil", err)
		}
		if got, err := c.IncrBy(ctx, p+"n", 41).Result(); err != nil || got != 41 {
			t.Fatalf("INCRBY: %d, %v", got, err)
		}
		if got, err := c.Incr(ctx, p+"n").Result(); err != nil || got != 42 {
			t.Fatalf("INCR: %d, %v", got, err)
		}
		must(c.HSet(ctx, p+"h", "a", "1", "b", "2").Err())
		if got, err := c.HGetAll(ctx, p+"h").Result(); err != nil || len(got) != 2 || got["a"] != "1" || got["b"] != "2" {
			t.Fatalf("HGETALL: %v, %v", got, err)
		}
		if got, err := c.MGet(ctx, p+"s", p+"missing").Result(); err != nil || len(got) != 2 || got[0] != "hello" || got[1] != nil {
			t.Fatalf("MGET: %v, %v", got, err)
		}
		must(c.Expire(ctx, p+"s", time.Minute).Err())
		if got, err := c.TTL(ctx, p+"s").Result(); err != nil || got <= 0 || got > time.Minute {
			t.Fatalf("TTL: %v, %v", got, err)
		}
		if got, err := c.Del(ctx, p+"s", p+"n", p+"h").Result(); err != nil || got != 3 {
			t.Fatalf("DEL: %d, %v", got, err)
		}
		if _, err := c.Do(ctx, "NOSUCHCOMMAND").Result(); err == nil || !strings.HasPrefix(err.Error(), "ERR unknown command") {
			t.Fatalf("unknown command: %v", err)
		}
	})
}

func grPipeline1000(t *testing.T, addr string) {
	grEachKind(t, func(t *testing.T, kind grKind, p string) {
		ctx := grCtx(t, 20*time.Second)
		c := grClient(t, addr, kind, 0, "")
		const n = 1000
		cmds, err := c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for i := range n {
				if i%2 == 0 {
					pipe.Incr(ctx, p+"ctr")
				} else {
					pipe.Echo(ctx, fmt.Sprintf("echo-%d", i))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(cmds) != n {
			t.Fatalf("%d replies, want %d", len(cmds), n)
		}
		for i, cmd := range cmds {
			switch cmd := cmd.(type) {
			case *redis.IntCmd:
				if want := int64(i/2 + 1); cmd.Val() != want {
					t.Fatalf("reply %d: INCR = %d, want %d", i, cmd.Val(), want)
				}
			case *redis.StringCmd:
				if want := fmt.Sprintf("echo-%d", i); cmd.Val() != want {
					t.Fatalf("reply %d: ECHO = %q, want %q", i, cmd.Val(), want)
				}
			default:
				t.Fatalf("reply %d: %T", i, cmd)
			}
		}
	})
}

func grTxPipelined(t *testing.T, addr string) {
	grEachKind(t, func(t *testing.T, kind grKind, p string) {
		ctx := grCtx(t, 20*time.Second)
		c := grClient(t, addr, kind, 0, "")
		var incr *redis.IntCmd
		var get *redis.StringCmd
		cmds, err := c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Set(ctx, p+"a", "x", 0)
			incr = pipe.Incr(ctx, p+"b")
			get = pipe.Get(ctx, p+"a")
			return nil
		})
		if err != nil || len(cmds) != 3 {
			t.Fatalf("TxPipelined: %d cmds, %v", len(cmds), err)
		}
		if incr.Val() != 1 || get.Val() != "x" {
			t.Fatalf("INCR %d, GET %q in the transaction", incr.Val(), get.Val())
		}
		// An error queued inside MULTI aborts EXEC; the client must see it and the proxy stay in sync.
		_, err = c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.Set(ctx, p+"a", "y", 0)
			pipe.Do(ctx, "NOSUCHCOMMAND")
			return nil
		})
		if err == nil {
			t.Fatal("transaction with an unknown command succeeded")
		}
		if got, err := c.Get(ctx, p+"a").Result(); err != nil || got != "x" {
			t.Fatalf("after aborted EXEC: GET %q, %v", got, err)
		}
	})
}

func grWatchConflict(t *testing.T, addr string) {
	grEachKind(t, func(t *testing.T, kind grKind, p string) {
		ctx := grCtx(t, 20*time.Second)
		c1 := grClient(t, addr, kind, 0, "")
		c2 := grClient(t, addr, kind, 0, "")
		key := p + "watched"
		if err := c1.Set(ctx, key, "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		// No conflict: the transaction runs.
		err := c1.Watch(ctx, func(tx *redis.Tx) error {
			n, err := tx.Get(ctx, key).Int()
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, key, n+1, 0)
				return nil
			})
			return err
		}, key)
		if err != nil {
			t.Fatalf("watch without conflict: %v", err)
		}
		// Another client writes the key between WATCH and EXEC.
		err = c1.Watch(ctx, func(tx *redis.Tx) error {
			n, err := tx.Get(ctx, key).Int()
			if err != nil {
				return err
			}
			if err := c2.Set(ctx, key, "other", 0).Err(); err != nil {
				return fmt.Errorf("conflicting SET: %w", err)
			}
			_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, key, n+1, 0)
				return nil
			})
			return err
		}, key)
		if !errors.Is(err, redis.TxFailedErr) {
			t.Fatalf("watch with conflict: %v, want redis.TxFailedErr", err)
		}
		if got, err := c2.Get(ctx, key).Result(); err != nil || got != "other" {
			t.Fatalf("after the failed transaction: %q, %v", got, err)
		}
	})
}

func grPubSub(t *testing.T, addr string) {
	grEachKind(t, func(t *testing.T, kind grKind, p string) {
		ctx := grCtx(t, 20*time.Second)
		sub := grClient(t, addr, kind, 0, "")
		pub := grClient(t, addr, kind, 0, "")
		ch := p + "chan"
		ps := sub.Subscribe(ctx, ch)
		defer ps.Close()
		if msg, err := ps.Receive(ctx); err != nil {
			t.Fatalf("subscribe: %v", err)
		} else if s, ok := msg.(*redis.Subscription); !ok || s.Kind != "subscribe" || s.Channel != ch {
			t.Fatalf("subscribe confirmation: %#v", msg)
		}
		const n = 100
		for i := range n {
			if got, err := pub.Publish(ctx, ch, fmt.Sprintf("m%d", i)).Result(); err != nil || got != 1 {
				t.Fatalf("PUBLISH %d: %d receivers, %v", i, got, err)
			}
		}
		for i := range n {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			msg, err := ps.ReceiveMessage(rctx)
			cancel()
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if want := fmt.Sprintf("m%d", i); msg.Channel != ch || msg.Payload != want {
				t.Fatalf("message %d: %s %q, want %q", i, msg.Channel, msg.Payload, want)
			}
		}
		// Unsubscribing leaves nobody listening.
		if err := ps.Unsubscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		if !grEventually(func() bool { n, _ := pub.Publish(ctx, ch, "late").Result(); return n == 0 }) {
			t.Fatal("PUBLISH still reaches a receiver after UNSUBSCRIBE")
		}
	})
}

func grBLPopWokenByLPush(t *testing.T, addr string) {
	// One kind at a time: the test waits for redis-server's blocked_clients to rise.
	grForKinds(t, false, func(t *testing.T, kind grKind, p string) {
		ctx := grCtx(t, 20*time.Second)
		waiter := grClient(t, addr, kind, 0, "")
		pusher := grClient(t, addr, kind, 0, "")
		list := p + "list"
		type result struct {
			v   []string
			err error
			at  time.Time
		}
		done := make(chan result, 1)
		go func() {
			v, err := waiter.BLPop(ctx, 10*time.Second, list).Result()
			done <- result{v, err, time.Now()}
		}()
		// Push once the waiter is blocked in Redis, so LPUSH is what wakes it.
		if !grEventually(func() bool {
			info, _ := pusher.Info(ctx, "clients").Result()
			return strings.Contains(info, "blocked_clients:") && !strings.Contains(info, "blocked_clients:0\r")
		}) {
			t.Fatal("BLPOP never blocked in redis-server")
		}
		pushed := time.Now()
		if err := pusher.LPush(ctx, list, "wake").Err(); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			if r.err != nil || len(r.v) != 2 || r.v[0] != list || r.v[1] != "wake" {
				t.Fatalf("BLPOP: %q, %v", r.v, r.err)
			}
			if d := r.at.Sub(pushed); d > 2*time.Second {
				t.Fatalf("BLPOP woke %v after LPUSH", d)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("BLPOP not woken within 5s of LPUSH")
		}
		// The waiter's connection still serves plain commands afterwards.
		if got, err := waiter.LLen(ctx, list).Result(); err != nil || got != 0 {
			t.Fatalf("LLEN after BLPOP: %d, %v", got, err)
		}
	})
}

func grTwoDBs(t *testing.T, addr string) {
	grEachKind(t, func(t *testing.T, kind grKind, p string) {
		ctx := grCtx(t, 20*time.Second)
		db0 := grClient(t, addr, kind, 0, "")
		db5 := grClient(t, addr, kind, 5, "")
		key := p + "k"
		if err := db0.Set(ctx, key, "in-0", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := db5.Set(ctx, key, "in-5", 0).Err(); err != nil {
			t.Fatal(err)
		}
		for i := range 20 { // alternate, so any mixing of the two connections would show
			if got, err := db0.Get(ctx, key).Result(); err != nil || got != "in-0" {
				t.Fatalf("round %d: DB 0 sees %q, %v", i, got, err)
			}
			if got, err := db5.Get(ctx, key).Result(); err != nil || got != "in-5" {
				t.Fatalf("round %d: DB 5 sees %q, %v", i, got, err)
			}
		}
		// A key only in DB 5 is absent from DB 0.
		if err := db5.Set(ctx, key+"only5", "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := db0.Exists(ctx, key+"only5").Result(); err != nil || n != 0 {
			t.Fatalf("DB 0 EXISTS of a DB 5 key: %d, %v", n, err)
		}
	})
}

func grAuth(t *testing.T, addr, password string) {
	grEachKind(t, func(t *testing.T, kind grKind, p string) {
		ctx := grCtx(t, 20*time.Second)
		t.Run("wrong_password", func(t *testing.T) {
			c := grClient(t, addr, kind, 0, "not-"+password)
			err := c.Ping(ctx).Err()
			if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
				t.Fatalf("PING with a wrong password: %v, want WRONGPASS", err)
			}
		})
		t.Run("right_password", func(t *testing.T) {
			c := grClient(t, addr, kind, 0, password)
			if err := c.Set(ctx, p+"k", "authed", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if got, err := c.Get(ctx, p+"k").Result(); err != nil || got != "authed" {
				t.Fatalf("GET: %q, %v", got, err)
			}
			c3 := grClient(t, addr, kind, 3, password)
			if got, err := c3.Exists(ctx, p+"k").Result(); err != nil || got != 0 {
				t.Fatalf("DB 3 with password: EXISTS %d, %v", got, err)
			}
		})
		t.Run("no_password", func(t *testing.T) {
			c := grClient(t, addr, kind, 0, "")
			err := c.Get(ctx, p+"k").Err()
			if err == nil || !strings.Contains(err.Error(), "NOAUTH") {
				t.Fatalf("GET without a password: %v, want NOAUTH", err)
			}
		})
	})
}

// grEventually polls cond for up to 5s.
func grEventually(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
