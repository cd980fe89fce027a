// Package goredis drives a running sessionproxy with go-redis v9 clients, RESP2 and RESP3.
//
// cmd/sessionproxy's TestGoRedis starts the proxies and runs these tests with:
//
//	GOREDIS_E2E_ADDR       a proxy in front of a redis-server without a password
//	GOREDIS_E2E_AUTH_ADDR  a proxy in front of a redis-server started with --requirepass
//	GOREDIS_E2E_PASSWORD   that password
//
// Without them every test skips.
package goredis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

var protocols = []int{2, 3}

func env(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Skipf("%s not set: run through cmd/sessionproxy TestGoRedis", name)
	}
	return v
}

// newClient is a go-redis client of the proxy that never retries, so every failure shows.
func newClient(t *testing.T, addr string, proto, db int, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr: addr, Protocol: proto, DB: db, Password: password,
		DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		MaxRetries: -1, PoolSize: 4,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// ctxT is a context bounded well inside the parent test's timeout.
func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eachProtocol runs f once per protocol, in parallel, with a key prefix of its own.
func eachProtocol(t *testing.T, f func(t *testing.T, proto int, prefix string)) {
	forProtocols(t, true, f)
}

func forProtocols(t *testing.T, parallel bool, f func(t *testing.T, proto int, prefix string)) {
	for _, proto := range protocols {
		t.Run(fmt.Sprintf("resp%d", proto), func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			f(t, proto, fmt.Sprintf("%s:", t.Name()))
		})
	}
}

func TestBasic(t *testing.T) {
	addr := env(t, "GOREDIS_E2E_ADDR")
	eachProtocol(t, func(t *testing.T, proto int, p string) {
		ctx := ctxT(t, 20*time.Second)
		c := newClient(t, addr, proto, 0, "")
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

func TestPipeline1000(t *testing.T) {
	addr := env(t, "GOREDIS_E2E_ADDR")
	eachProtocol(t, func(t *testing.T, proto int, p string) {
		ctx := ctxT(t, 20*time.Second)
		c := newClient(t, addr, proto, 0, "")
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

func TestTxPipelined(t *testing.T) {
	addr := env(t, "GOREDIS_E2E_ADDR")
	eachProtocol(t, func(t *testing.T, proto int, p string) {
		ctx := ctxT(t, 20*time.Second)
		c := newClient(t, addr, proto, 0, "")
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

func TestWatchConflict(t *testing.T) {
	addr := env(t, "GOREDIS_E2E_ADDR")
	eachProtocol(t, func(t *testing.T, proto int, p string) {
		ctx := ctxT(t, 20*time.Second)
		c1 := newClient(t, addr, proto, 0, "")
		c2 := newClient(t, addr, proto, 0, "")
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

func TestPubSub(t *testing.T) {
	addr := env(t, "GOREDIS_E2E_ADDR")
	eachProtocol(t, func(t *testing.T, proto int, p string) {
		ctx := ctxT(t, 20*time.Second)
		sub := newClient(t, addr, proto, 0, "")
		pub := newClient(t, addr, proto, 0, "")
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
		if !eventually(func() bool { n, _ := pub.Publish(ctx, ch, "late").Result(); return n == 0 }) {
			t.Fatal("PUBLISH still reaches a receiver after UNSUBSCRIBE")
		}
	})
}

func TestBLPopWokenByLPush(t *testing.T) {
	addr := env(t, "GOREDIS_E2E_ADDR")
	// One protocol at a time: the test waits for redis-server's blocked_clients to rise.
	forProtocols(t, false, func(t *testing.T, proto int, p string) {
		ctx := ctxT(t, 20*time.Second)
		waiter := newClient(t, addr, proto, 0, "")
		pusher := newClient(t, addr, proto, 0, "")
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
		if !eventually(func() bool {
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

func TestTwoDBs(t *testing.T) {
	addr := env(t, "GOREDIS_E2E_ADDR")
	eachProtocol(t, func(t *testing.T, proto int, p string) {
		ctx := ctxT(t, 20*time.Second)
		db0 := newClient(t, addr, proto, 0, "")
		db5 := newClient(t, addr, proto, 5, "")
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

func TestAuth(t *testing.T) {
	addr := env(t, "GOREDIS_E2E_AUTH_ADDR")
	password := env(t, "GOREDIS_E2E_PASSWORD")
	eachProtocol(t, func(t *testing.T, proto int, p string) {
		ctx := ctxT(t, 20*time.Second)
		t.Run("wrong_password", func(t *testing.T) {
			c := newClient(t, addr, proto, 0, "not-"+password)
			err := c.Ping(ctx).Err()
			if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
				t.Fatalf("PING with a wrong password: %v, want WRONGPASS", err)
			}
		})
		t.Run("right_password", func(t *testing.T) {
			c := newClient(t, addr, proto, 0, password)
			if err := c.Set(ctx, p+"k", "authed", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if got, err := c.Get(ctx, p+"k").Result(); err != nil || got != "authed" {
				t.Fatalf("GET: %q, %v", got, err)
			}
			c3 := newClient(t, addr, proto, 3, password)
			if got, err := c3.Exists(ctx, p+"k").Result(); err != nil || got != 0 {
				t.Fatalf("DB 3 with password: EXISTS %d, %v", got, err)
			}
		})
		t.Run("no_password", func(t *testing.T) {
			c := newClient(t, addr, proto, 0, "")
			err := c.Get(ctx, p+"k").Err()
			if err == nil || !strings.Contains(err.Error(), "NOAUTH") {
				t.Fatalf("GET without a password: %v, want NOAUTH", err)
			}
		})
	})
}

// eventually polls cond for up to 5s.
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
