package main

// Model tests of the user -> sessions index: the proxy runs in-process, wired exactly as main
// wires it (conf.Default -> proxyOptions -> newUpstreams -> repairFunc -> proxy.New, plus the
// expiry reaper), in front of a real redis-server. Concurrent go-redis clients send a seeded random mix of every session
// write the planner knows, pipelined, in MULTI/EXEC and under WATCH, across two DBs; afterwards
// the index must match the session keys exactly. The model is the index derived from the keys
// themselves, computed here straight from Redis without any of the proxy's code:
//
//	session:<sid> is a hash with a non-empty userid  <=>  sid in user:<userid>,
//	sessionproxy:owners[session:<sid>] = userid, and, when the key has a TTL,
//	sessionproxy:deadlines[session:<sid>] = PEXPIRETIME.
//
// Re-run a failure with the seed it logged: go test ./cmd/sessionproxy -run Model -model.seed=N

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/conf"
	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/syncbuf"
	"github.com/sessionproxy/sessionproxy/proxy"
	"github.com/sessionproxy/sessionproxy/reaper"
)

var modelSeed = flag.Uint64("model.seed", 0, "seed of the randomized index model test (0: from the clock)")

// The key space of the randomized test: small enough that clients collide on keys all the time.
const (
	modelSessions   = 300 // session:0 .. session:299 in each DB
	modelOthers     = 20  // other:<n>: non-session keys, renamed and copied onto sessions
	modelWorkers    = 8
	modelOpsPerWork = 300 // batches (pipeline, transaction, WATCH or one command) per worker
	modelTimeBound  = 45 * time.Second
)

// modelUIDs are the users: mostly numeric (HINCRBY can re-own those), a few with characters
// that must survive being spliced into index keys and SCAN patterns.
var modelUIDs = func() []string {
	u := []string{"u-7", "alice:x", "a b", "ü", "x*y", "007"}
	for i := len(u); i < 40; i++ {
		u = append(u, strconv.Itoa(100+i))
	}
	return u
}()

// modelStartProxy runs the proxy and its expiry reaper in-process in front of upstream, built
// the way serve() in main.go builds them, and stops them (failing the test if they do not stop
// cleanly) when the test ends.
func modelStartProxy(t testing.TB, upstream string, tweak ...func(*conf.Config)) string {
	t.Helper()
	cfg := conf.Default()
	for _, f := range tweak {
		f(&cfg)
	}
	cfg.Listen = "127.0.0.1:0"
	cfg.Metrics = ""
	cfg.Upstream.Addr = upstream
	cfg.ShutdownTimeout = conf.Duration(5 * time.Second)
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := prometheus.NewRegistry()
	opts, err := proxyOptions(cfg, logger, reg)
	if err != nil {
		t.Fatalf("proxyOptions: %v", err)
	}
	ups := newUpstreams(cfg.Upstream, opts.TLS)
	t.Cleanup(ups.Close) // registered first: runs after the server has stopped
	opts.Repair = repairFunc(ups)
	srv, err := proxy.New(opts)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	rp, err := reaper.New(reaper.Options{Schema: opts.Schema, DB: ups.db, Interval: cfg.Reaper.Interval.D(),
		Batch: cfg.Reaper.Batch, Notifications: cfg.Reaper.Notifications, Logger: logger, Registerer: reg})
	if err != nil {
		t.Fatalf("reaper.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- srv.Run(ctx) }()
	go func() { done <- rp.Run(ctx) }()
	addr := make(chan string, 1)
	go func() { addr <- srv.Addr().String() }()
	var a string
	select {
	case a = <-addr:
	case err := <-done:
		cancel()
		t.Fatalf("proxy or reaper ended before the proxy listened: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("proxy did not listen within 10s")
	}
	t.Cleanup(func() {
		cancel()
		for range 2 {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("proxy or reaper Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("proxy or reaper did not stop within 15s")
			}
		}
		if t.Failed() {
			t.Logf("proxy log (tail):\n%s", logs.Tail(8<<10))
		}
	})
	return a
}

// modelClient is a go-redis client of the proxy the way applications configure one: RESP2,
// a small pool, no retries (a resent write would hide a lost reply). helloless clients get
// go-redis' connection-setup HELLO answered locally with Redis' unknown-command error, as from
// a server without HELLO: go-redis then carries on in RESP2 without it, like redis-py or Jedis
// do, and the proxy keeps the client on its shared, coalescing upstream path (HELLO itself
// moves a client to a dedicated upstream connection).
func modelClient(t testing.TB, addr string, db, poolSize int, helloless bool) *redis.Client {
	t.Helper()
	opts := &redis.Options{
		Addr: addr, DB: db, Protocol: 2, PoolSize: poolSize, PipelinePoolSize: -1,
		MaxRetries: -1, DialTimeout: 5 * time.Second, ReadTimeout: 60 * time.Second, WriteTimeout: 10 * time.Second,
	}
	if helloless {
		opts.Dialer = noHelloDial
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// modelDirect is a plain go-redis client of redis-server itself, for setup and verification.
func modelDirect(t testing.TB, addr string, db int) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db, Protocol: 2, PoolSize: 4,
		ReadTimeout: 30 * time.Second, DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// modelGen draws random session writes for one worker.
type modelGen struct {
	rng   *rand.Rand
	db    int       // the DB of the batch being drawn; MOVE and COPY ... DB target the other one
	dumps []string  // DUMP payloads of owned session hashes, for RESTORE
	ops   []modelOp // the mix to draw from; nil: modelOps
	early bool      // the worker is in the first half of its batches
}

func (g *modelGen) session() string { return "session:" + strconv.Itoa(g.rng.IntN(modelSessions)) }
func (g *modelGen) other() string   { return "other:" + strconv.Itoa(g.rng.IntN(modelOthers)) }
func (g *modelGen) uid() string     { return modelUIDs[g.rng.IntN(len(modelUIDs))] }
func (g *modelGen) otherDB() string { return strconv.Itoa(1 - g.db) }
func (g *modelGen) value() string   { return "v" + strconv.Itoa(g.rng.IntN(1000)) }

// shortTTL and longTTL are in seconds: minutes, so nothing expires while the test runs.
func (g *modelGen) shortTTL() string { return strconv.Itoa(120 + g.rng.IntN(480)) }
func (g *modelGen) longTTL() string  { return strconv.Itoa(3600 + g.rng.IntN(82800)) }

// pastUnix is a deadline already gone: the key is deleted by the command itself.
func (g *modelGen) pastUnix() string {
	return strconv.FormatInt(time.Now().Add(-time.Duration(1+g.rng.IntN(3600))*time.Second).Unix(), 10)
}

// modelOp is one kind of command in the random mix, with its relative weight.
type modelOp struct {
	name   string
	weight int
	gen    func(g *modelGen) []any
}

var modelOps = []modelOp{
	{"HSET owner", 14, func(g *modelGen) []any { return []any{"HSET", g.session(), "userid", g.uid(), "data", g.value()} }},
	{"HSET data", 4, func(g *modelGen) []any { return []any{"HSET", g.session(), "data", g.value()} }},
	{"HSET empty owner", 1, func(g *modelGen) []any { return []any{"HSET", g.session(), "userid", ""} }},
	{"HMSET", 5, func(g *modelGen) []any {
		return []any{"HMSET", g.session(), "seen", g.value(), "userid", g.uid()}
	}},
	{"HSETNX", 4, func(g *modelGen) []any { return []any{"HSETNX", g.session(), "userid", g.uid()} }},
	{"HDEL owner", 4, func(g *modelGen) []any { return []any{"HDEL", g.session(), "data", "userid"} }},
	{"HINCRBY owner", 1, func(g *modelGen) []any { return []any{"HINCRBY", g.session(), "userid", "1"} }},
	{"HINCRBY data", 1, func(g *modelGen) []any { return []any{"HINCRBY", g.session(), "visits", "1"} }},
	{"SET", 2, func(g *modelGen) []any { return []any{"SET", g.session(), g.value()} }},
	{"SET EX", 1, func(g *modelGen) []any { return []any{"SET", g.session(), g.value(), "EX", g.shortTTL()} }},
	{"SET GET", 1, func(g *modelGen) []any { return []any{"SET", g.session(), g.value(), "GET"} }},
	{"SETEX", 1, func(g *modelGen) []any { return []any{"SETEX", g.session(), g.longTTL(), g.value()} }},
	{"GETSET", 1, func(g *modelGen) []any { return []any{"GETSET", g.session(), g.value()} }},
	{"GETDEL", 2, func(g *modelGen) []any { return []any{"GETDEL", g.session()} }},
	{"GETEX EX", 1, func(g *modelGen) []any { return []any{"GETEX", g.session(), "EX", g.shortTTL()} }},
	{"GETEX PERSIST", 1, func(g *modelGen) []any { return []any{"GETEX", g.session(), "PERSIST"} }},
	{"DEL", 4, func(g *modelGen) []any { return []any{"DEL", g.session(), g.session(), g.other()} }},
	{"UNLINK", 3, func(g *modelGen) []any { return []any{"UNLINK", g.session(), g.session()} }},
	{"EXPIRE short", 4, func(g *modelGen) []any { return []any{"EXPIRE", g.session(), g.shortTTL()} }},
	{"EXPIRE long", 4, func(g *modelGen) []any { return []any{"EXPIRE", g.session(), g.longTTL()} }},
	{"EXPIRE GT", 1, func(g *modelGen) []any { return []any{"EXPIRE", g.session(), g.longTTL(), "GT"} }},
	{"EXPIRE NX", 1, func(g *modelGen) []any { return []any{"EXPIRE", g.session(), g.shortTTL(), "NX"} }},
	{"EXPIRE past", 2, func(g *modelGen) []any { return []any{"EXPIRE", g.session(), "-1"} }},
	{"PEXPIRE 0", 1, func(g *modelGen) []any { return []any{"PEXPIRE", g.session(), "0"} }},
	{"EXPIREAT past", 1, func(g *modelGen) []any { return []any{"EXPIREAT", g.session(), g.pastUnix()} }},
	{"PEXPIREAT future", 1, func(g *modelGen) []any {
		return []any{"PEXPIREAT", g.session(), strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)}
	}},
	{"PERSIST", 3, func(g *modelGen) []any { return []any{"PERSIST", g.session()} }},
	{"RENAME", 3, func(g *modelGen) []any { return []any{"RENAME", g.session(), g.session()} }},
	{"RENAME away", 1, func(g *modelGen) []any { return []any{"RENAME", g.session(), g.other()} }},
	{"RENAME onto", 1, func(g *modelGen) []any { return []any{"RENAME", g.other(), g.session()} }},
	{"RENAMENX", 2, func(g *modelGen) []any { return []any{"RENAMENX", g.session(), g.session()} }},
	{"MOVE", 3, func(g *modelGen) []any { return []any{"MOVE", g.session(), g.otherDB()} }},
	{"COPY", 2, func(g *modelGen) []any { return []any{"COPY", g.session(), g.session()} }},
	{"COPY REPLACE", 1, func(g *modelGen) []any { return []any{"COPY", g.session(), g.session(), "REPLACE"} }},
	{"COPY DB", 2, func(g *modelGen) []any {
		return []any{"COPY", g.session(), g.session(), "DB", g.otherDB(), "REPLACE"}
	}},
	{"COPY onto", 1, func(g *modelGen) []any { return []any{"COPY", g.other(), g.session(), "REPLACE"} }},
	{"HSET other", 2, func(g *modelGen) []any { return []any{"HSET", g.other(), "userid", g.uid()} }},
	{"MSET", 1, func(g *modelGen) []any { return []any{"MSET", g.session(), g.value(), g.other(), g.value()} }},
	{"SETNX", 1, func(g *modelGen) []any { return []any{"SETNX", g.session(), g.value()} }},
	{"RESTORE", 2, func(g *modelGen) []any {
		return []any{"RESTORE", g.session(), "0", g.dumps[g.rng.IntN(len(g.dumps))], "REPLACE"}
	}},
	{"RESTORE TTL", 1, func(g *modelGen) []any {
		return []any{"RESTORE", g.session(), g.shortTTL() + "000", g.dumps[g.rng.IntN(len(g.dumps))], "REPLACE"}
	}},
	{"SWAPDB", 1, func(*modelGen) []any { return []any{"SWAPDB", "0", "1"} }},
	{"FLUSHDB", 1, func(g *modelGen) []any {
		// Rarer than its weight, and only in a worker's first half: it empties a DB of all
		// the other ops built, and the checks want sessions left at the end.
		if !g.early || g.rng.IntN(4) > 0 {
			return []any{"PERSIST", g.session()}
		}
		return []any{"FLUSHDB"}
	}},
	{"SESSIONS.REVOKE", 1, func(g *modelGen) []any { return []any{"SESSIONS.REVOKE", g.uid()} }},
	{"SESSIONS.COUNT", 1, func(g *modelGen) []any { return []any{"SESSIONS.COUNT", g.uid()} }},
	{"SESSIONS.LIST", 1, func(g *modelGen) []any { return []any{"SESSIONS.LIST", g.uid()} }},
}

func (g *modelGen) command() []any {
	ops := g.ops
	if ops == nil {
		ops = modelOps
	}
	total := 0
	for _, op := range ops {
		total += op.weight
	}
	w := g.rng.IntN(total)
	for _, op := range ops {
		if w < op.weight {
			return op.gen(g)
		}
		w -= op.weight
	}
	panic("unreachable")
}

// modelExpectedErrors are the error replies the random mix provokes by design (wrong types,
// renames of missing keys...). Anything else is a failure.
var modelExpectedErrors = []string{
	"WRONGTYPE ",
	"ERR no such key",
	"ERR hash value is not an integer",
	"ERR value is not an integer",
	"ERR source and destination objects are the same",
	"BUSYKEY ", // RESTORE without REPLACE; not drawn, but harmless
}

// modelStats counts what the workers did.
type modelStats struct {
	commands, batches, pipelines, txs, watches, conflicts, expectedErrs atomic.Int64
	unexpected                                                          atomic.Int64

	mu      sync.Mutex
	samples []string // the first unexpected errors
}

func (s *modelStats) result(cmd redis.Cmder) {
	s.commands.Add(1)
	err := cmd.Err()
	if err == nil || errors.Is(err, redis.Nil) {
		return
	}
	for _, p := range modelExpectedErrors {
		if strings.HasPrefix(err.Error(), p) {
			s.expectedErrs.Add(1)
			return
		}
	}
	s.fail(fmt.Sprintf("%v: %v", cmd.Args(), err))
}

func (s *modelStats) fail(msg string) {
	s.unexpected.Add(1)
	s.mu.Lock()
	if len(s.samples) < 20 {
		s.samples = append(s.samples, msg)
	}
	s.mu.Unlock()
}

// modelWorker is one client of the proxy with a connection pool per DB.
type modelWorker struct {
	id        int
	dbs       [2]*redis.Client
	helloless bool
	tx        bool // may run MULTI/EXEC and WATCH
	gen       *modelGen
	stats     *modelStats
}

// run sends modelOpsPerWork batches, or stops at the deadline.
func (w *modelWorker) run(ctx context.Context, deadline time.Time) (done int) {
	for ; done < modelOpsPerWork; done++ {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return done
		}
		w.gen.db = w.gen.rng.IntN(2)
		w.gen.early = done < modelOpsPerWork/2
		c := w.dbs[w.gen.db]
		kind := w.gen.rng.IntN(100)
		if !w.tx && kind >= 70 {
			kind -= 30 // helloless workers stay on the shared path: pipelines instead
		}
		w.stats.batches.Add(1)
		switch {
		case kind < 20:
			cmd := c.Do(ctx, w.gen.command()...)
			w.stats.result(cmd)
		case kind < 70:
			w.stats.pipelines.Add(1)
			w.batch(ctx, c.Pipelined, 5+w.gen.rng.IntN(46))
		case kind < 85:
			w.stats.txs.Add(1)
			w.batch(ctx, c.TxPipelined, 5+w.gen.rng.IntN(46))
		default:
			w.stats.watches.Add(1)
			w.watch(ctx, c)
		}
	}
	return done
}

// batch sends n random commands with pipelined (Pipelined or TxPipelined).
func (w *modelWorker) batch(ctx context.Context, pipelined func(context.Context, func(redis.Pipeliner) error) ([]redis.Cmder, error), n int) {
	cmds, err := pipelined(ctx, func(p redis.Pipeliner) error {
		for range n {
			p.Do(ctx, w.gen.command()...)
		}
		return nil
	})
	if len(cmds) != n {
		w.stats.fail(fmt.Sprintf("worker %d: batch of %d got %d results: %v", w.id, n, len(cmds), err))
	}
	for _, c := range cmds {
		w.stats.result(c)
	}
}

// watch reads two sessions under WATCH and re-owns them in a transaction; another client
// touching them makes EXEC fail, which is expected.
func (w *modelWorker) watch(ctx context.Context, c *redis.Client) {
	a, b := w.gen.session(), w.gen.session()
	n := 1 + w.gen.rng.IntN(10)
	err := c.Watch(ctx, func(tx *redis.Tx) error {
		owner, err := tx.HGet(ctx, a, "userid").Result()
		if err != nil && !errors.Is(err, redis.Nil) && !strings.HasPrefix(err.Error(), "WRONGTYPE") {
			return err
		}
		cmds, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if owner != "" {
				p.HSet(ctx, b, "userid", owner) // b follows a's owner
			} else {
				p.HSet(ctx, a, "userid", w.gen.uid())
			}
			for range n {
				p.Do(ctx, w.gen.command()...)
			}
			return nil
		})
		if errors.Is(err, redis.TxFailedErr) {
			return err
		}
		for _, c := range cmds {
			w.stats.result(c)
		}
		return nil
	}, a, b)
	switch {
	case errors.Is(err, redis.TxFailedErr):
		w.stats.conflicts.Add(1)
	case err != nil:
		w.stats.fail(fmt.Sprintf("worker %d: WATCH %s %s: %v", w.id, a, b, err))
	}
}

// modelRun runs n workers against the proxy at addr, set up by shape (which path, which mix),
// until each has sent its modelOpsPerWork batches or modelTimeBound has passed; it returns what
// they did, the batches sent and how long it took. The seed is logged for a re-run.
func modelRun(t *testing.T, upstream, addr string, n int, shape func(*modelWorker)) (*modelStats, int, time.Duration) {
	t.Helper()
	seed := *modelSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (re-run with -model.seed=%d)", seed, seed)
	dumps := modelDumps(t, upstream)
	stats := &modelStats{}
	ctx, cancel := context.WithTimeout(context.Background(), modelTimeBound+15*time.Second)
	defer cancel()
	deadline := time.Now().Add(modelTimeBound)
	var wg sync.WaitGroup
	done := make([]int, n)
	start := time.Now()
	for i := range n {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		w := &modelWorker{id: i, gen: &modelGen{rng: rng, dumps: dumps}, stats: stats}
		shape(w)
		for db := range w.dbs {
			w.dbs[db] = modelClient(t, addr, db, 1+rng.IntN(2), w.helloless)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			done[w.id] = w.run(ctx, deadline)
		}()
	}
	wg.Wait()
	total := 0
	for _, d := range done {
		total += d
	}
	return stats, total, time.Since(start)
}

// TestModelRandomizedIndex is the acceptance test of the index under concurrent random
// traffic: afterwards SESSIONS.CHECK and an independent check find no drift in either DB.
func TestModelRandomizedIndex(t *testing.T) {
	t.Parallel()
	up := redistest.Start(t)
	addr := modelStartProxy(t, up.Addr())
	// Workers 0-3: plain go-redis (HELLO: dedicated upstream connections, MULTI, WATCH).
	// Workers 4-7: no HELLO (shared upstream path); 6 and 7 also use MULTI/WATCH, which moves
	// their connections to dedicated ones mid-run.
	stats, total, elapsed := modelRun(t, up.Addr(), addr, modelWorkers, func(w *modelWorker) {
		w.helloless, w.tx = w.id >= 4, w.id < 4 || w.id >= 6
	})
	t.Logf("%d workers: %d of %d batches in %v (%d commands: %d pipelines, %d MULTI/EXEC, %d WATCH with %d conflicts; %d expected error replies)",
		modelWorkers, total, modelWorkers*modelOpsPerWork, elapsed.Round(time.Millisecond), stats.commands.Load(),
		stats.pipelines.Load(), stats.txs.Load(), stats.watches.Load(), stats.conflicts.Load(), stats.expectedErrs.Load())
	if total < modelWorkers*modelOpsPerWork {
		t.Logf("time bound %v reached: %d batches not sent", modelTimeBound, modelWorkers*modelOpsPerWork-total)
	}
	if n := stats.unexpected.Load(); n > 0 {
		t.Errorf("%d unexpected replies, e.g.:\n  %s", n, strings.Join(stats.samples, "\n  "))
	}
	if total == 0 || stats.commands.Load() == 0 {
		t.Fatal("the workers sent nothing")
	}

	// SESSIONS.CHECK replies carry no DB number; "scanned" tells the DBs apart only if their
	// session key counts differ. Make sure they do, with a key that has no owner (so no drift).
	direct1 := modelDirect(t, up.Addr(), 1)
	if len(modelScan(t, modelDirect(t, up.Addr(), 0), "session:*")) == len(modelScan(t, direct1, "session:*")) {
		if err := direct1.Set(context.Background(), "session:unowned-marker", "no owner", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for db := range 2 {
		t.Run(fmt.Sprintf("db%d", db), func(t *testing.T) {
			direct := modelDirect(t, up.Addr(), db)
			truth := modelVerifyIndex(t, direct)
			t.Logf("db %d: %d session keys, %d owned by %d users, %d with a deadline",
				db, truth.sessions, len(truth.owners), len(truth.index), len(truth.deadlines))
			if truth.sessions == 0 || len(truth.owners) == 0 {
				t.Errorf("db %d holds no owned session: the mix did not exercise the index", db)
			}
			// SESSIONS.CHECK through the proxy, from a plain go-redis client of this DB and from
			// one that stays on the shared path.
			for _, helloless := range []bool{false, true} {
				c := modelClient(t, addr, db, 1, helloless)
				rep := modelSessionsCheck(t, c, "SESSIONS.CHECK")
				if rep.Missing != 0 || rep.Stale != 0 || rep.Orphans != 0 || rep.Scanned != int64(truth.sessions) {
					t.Errorf("SESSIONS.CHECK in db %d (helloless client: %v) = %+v; want missing 0, stale 0, scanned %d (the session keys of db %d)",
						db, helloless, rep, truth.sessions, db)
				}
			}
			// Last, as it repairs on the way: SESSIONS.LIST agrees with the model for every user.
			c := modelClient(t, addr, db, 1, true)
			for _, uid := range modelUIDs {
				got, err := c.Do(context.Background(), "SESSIONS.LIST", uid).StringSlice()
				if err != nil {
					t.Fatalf("SESSIONS.LIST %q: %v", uid, err)
				}
				if want := modelSorted(truth.index[uid]); !slices.Equal(got, want) {
					t.Errorf("SESSIONS.LIST %q in db %d = %v, want %v", uid, db, got, want)
				}
			}
		})
	}
}

// modelDumps returns DUMP payloads of session hashes owned by a few users, made on a scratch
// key of DB 15 that is deleted again.
func modelDumps(t testing.TB, upstream string) []string {
	t.Helper()
	ctx := context.Background()
	c := modelDirect(t, upstream, 15)
	var out []string
	for _, uid := range modelUIDs[:8] {
		if err := c.HSet(ctx, "scratch", "userid", uid, "data", "restored").Err(); err != nil {
			t.Fatal(err)
		}
		d, err := c.Dump(ctx, "scratch").Result()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	if err := c.Del(ctx, "scratch").Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// modelTruth is the index the session keys of one DB imply.
type modelTruth struct {
	sessions  int                        // session:* keys of any type
	index     map[string]map[string]bool // uid -> sids of session:* (index sets user:<uid>)
	jsessions int                        // sess:* keys of any type (the JSON rule, if configured)
	jindex    map[string]map[string]bool // uid -> sids of sess:* (index sets juser:<uid>)
	owners    map[string]string          // session key -> uid
	deadlines map[string]int64           // owned session key -> PEXPIRETIME (ms), if it has a TTL
}

// modelJSONOwner is the owner of a connect-redis style JSON session value at passport.user, by
// the rules the README gives: a non-empty string, or an integral number below 2^53; nothing
// for a value that is not JSON (a NUL byte ends a Lua cjson parse: not JSON either).
func modelJSONOwner(raw string) string {
	var doc any
	if strings.IndexByte(raw, 0) >= 0 || json.Unmarshal([]byte(raw), &doc) != nil {
		return ""
	}
	for _, part := range []string{"passport", "user"} {
		m, ok := doc.(map[string]any)
		if !ok {
			return ""
		}
		doc = m[part]
	}
	switch v := doc.(type) {
	case string:
		return v
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return strconv.FormatInt(int64(v), 10)
		}
	}
	return ""
}

// modelVerifyIndex reads the session keys of rdb's DB straight from Redis, derives the index
// they imply, and compares it exactly with the index sets (user:* for session:* hashes, juser:*
// for sess:* JSON strings), the owner map and the deadline ledger, reporting every difference.
func modelVerifyIndex(t testing.TB, rdb *redis.Client) modelTruth {
	t.Helper()
	ctx := context.Background()
	truth := modelTruth{index: map[string]map[string]bool{}, jindex: map[string]map[string]bool{},
		owners: map[string]string{}, deadlines: map[string]int64{}}
	for _, rule := range []struct {
		pattern string
		json    bool
		count   *int
		index   map[string]map[string]bool
	}{{"session:*", false, &truth.sessions, truth.index}, {"sess:*", true, &truth.jsessions, truth.jindex}} {
		keys := modelScan(t, rdb, rule.pattern)
		*rule.count = len(keys)
		for chunk := range slices.Chunk(keys, 2000) {
			p := rdb.Pipeline()
			owners := make([]*redis.StringCmd, len(chunk))
			ttls := make([]*redis.Cmd, len(chunk))
			for i, k := range chunk {
				if rule.json {
					owners[i] = p.Get(ctx, k)
				} else {
					owners[i] = p.HGet(ctx, k, "userid")
				}
				ttls[i] = p.Do(ctx, "PEXPIRETIME", k)
			}
			_, _ = p.Exec(ctx) // per-command errors below: WRONGTYPE and nil mean "no owner"
			for i, k := range chunk {
				uid, err := owners[i].Result()
				switch {
				case errors.Is(err, redis.Nil) || err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE"):
					continue
				case err != nil:
					t.Fatalf("reading the owner of %s: %v", k, err)
				}
				if rule.json {
					uid = modelJSONOwner(uid)
				}
				if uid == "" {
					continue
				}
				sid := k[strings.IndexByte(k, ':')+1:]
				if rule.index[uid] == nil {
					rule.index[uid] = map[string]bool{}
				}
				rule.index[uid][sid] = true
				truth.owners[k] = uid
				if ms, err := ttls[i].Int64(); err != nil {
					t.Fatalf("PEXPIRETIME %s: %v", k, err)
				} else if ms > 0 {
					truth.deadlines[k] = ms
				}
			}
		}
	}

	// The index sets, every member in both directions.
	for _, ix := range []struct {
		prefix, session string
		truth           map[string]map[string]bool
	}{{"user:", "session:", truth.index}, {"juser:", "sess:", truth.jindex}} {
		actual := map[string]map[string]bool{}
		for _, ik := range modelScan(t, rdb, ix.prefix+"*") {
			if typ := rdb.Type(ctx, ik).Val(); typ != "set" {
				t.Errorf("index key %q has type %q, want set", ik, typ)
				continue
			}
			members, err := rdb.SMembers(ctx, ik).Result()
			if err != nil {
				t.Fatalf("SMEMBERS %s: %v", ik, err)
			}
			uid := strings.TrimPrefix(ik, ix.prefix)
			actual[uid] = map[string]bool{}
			for _, m := range members {
				actual[uid][m] = true
			}
		}
		var missing, stale []string
		for uid, sids := range ix.truth {
			for sid := range sids {
				if !actual[uid][sid] {
					missing = append(missing, fmt.Sprintf("%s%s (owner %q) not in %s%s", ix.session, sid, uid, ix.prefix, uid))
				}
			}
		}
		for uid, sids := range actual {
			for sid := range sids {
				if !ix.truth[uid][sid] {
					stale = append(stale, fmt.Sprintf("%s%s holds %s, but %s%s is owned by %q", ix.prefix, uid, sid, ix.session, sid, truth.owners[ix.session+sid]))
				}
			}
		}
		modelReportDrift(t, "missing index entries", missing)
		modelReportDrift(t, "stale index entries", stale)
	}

	// The owner map.
	ownerMap, err := rdb.HGetAll(ctx, "sessionproxy:owners").Result()
	if err != nil {
		t.Fatalf("HGETALL sessionproxy:owners: %v", err)
	}
	var ownerDrift []string
	for k, uid := range truth.owners {
		if got, ok := ownerMap[k]; !ok || got != uid {
			ownerDrift = append(ownerDrift, fmt.Sprintf("owners[%s] = %q (present %v), want %q", k, got, ok, uid))
		}
	}
	for k, got := range ownerMap {
		if _, ok := truth.owners[k]; !ok {
			ownerDrift = append(ownerDrift, fmt.Sprintf("owners[%s] = %q, but the key is not an owned session", k, got))
		}
	}
	modelReportDrift(t, "owner map drift", ownerDrift)

	// The deadline ledger: owned sessions with a TTL, scored by their deadline.
	ledger, err := rdb.ZRangeWithScores(ctx, "sessionproxy:deadlines", 0, -1).Result()
	if err != nil {
		t.Fatalf("ZRANGE sessionproxy:deadlines: %v", err)
	}
	var ledgerDrift []string
	inLedger := map[string]bool{}
	for _, z := range ledger {
		k := z.Member.(string)
		inLedger[k] = true
		if want, ok := truth.deadlines[k]; !ok || int64(z.Score) != want {
			ledgerDrift = append(ledgerDrift, fmt.Sprintf("ledger[%s] = %.0f, want %d (has deadline: %v)", k, z.Score, want, ok))
		}
	}
	for k, ms := range truth.deadlines {
		if !inLedger[k] {
			ledgerDrift = append(ledgerDrift, fmt.Sprintf("%s (deadline %d) not in the ledger", k, ms))
		}
	}
	modelReportDrift(t, "deadline ledger drift", ledgerDrift)
	return truth
}

func modelReportDrift(t testing.TB, what string, lines []string) {
	t.Helper()
	if len(lines) == 0 {
		return
	}
	sort.Strings(lines)
	n := len(lines)
	if len(lines) > 15 {
		lines = append(lines[:15], "...")
	}
	t.Errorf("%d %s:\n  %s", n, what, strings.Join(lines, "\n  "))
}

// modelScan returns every key matching pattern (SCAN to the end, deduplicated).
func modelScan(t testing.TB, rdb *redis.Client, pattern string) []string {
	t.Helper()
	seen := map[string]bool{}
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(context.Background(), cursor, pattern, 1000).Result()
		if err != nil {
			t.Fatalf("SCAN %s: %v", pattern, err)
		}
		for _, k := range keys {
			seen[k] = true
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func modelSorted(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// modelReport is a SESSIONS.CHECK / REINDEX reply.
// Drift reports whether a check found anything to repair.
func (r modelReport) Drift() bool { return r.Missing != 0 || r.Stale != 0 || r.Orphans != 0 }

type modelReport struct {
	Rule                                            string
	Scanned, Missing, Stale, Orphans, Fixed, Millis int64
}

// modelSessionsCheck sends SESSIONS.CHECK or SESSIONS.REINDEX and parses the flat reply
// rule/scanned/missing/stale/orphans/fixed/duration_ms.
func modelSessionsCheck(t testing.TB, c *redis.Client, cmd string) modelReport {
	t.Helper()
	words := strings.Fields(cmd) // "SESSIONS.CHECK [rule]"
	wantRule := "session"
	if len(words) > 1 {
		wantRule = words[1]
	}
	args := make([]any, len(words))
	for i, w := range words {
		args[i] = w
	}
	vals, err := c.Do(context.Background(), args...).Slice()
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	names := []string{"rule", "scanned", "missing", "stale", "orphans", "fixed", "duration_ms"}
	if len(vals) != 2*len(names) {
		t.Fatalf("%s: reply %v, want the fields %v", cmd, vals, names)
	}
	var rep modelReport
	ints := []*int64{&rep.Scanned, &rep.Missing, &rep.Stale, &rep.Orphans, &rep.Fixed, &rep.Millis}
	for i, name := range names {
		if vals[2*i] != name {
			t.Fatalf("%s: field %d is %v, want %q (reply %v)", cmd, i, vals[2*i], name, vals)
		}
		v := vals[2*i+1]
		if i == 0 {
			rep.Rule, _ = v.(string)
			continue
		}
		n, ok := v.(int64)
		if !ok {
			t.Fatalf("%s: %s is %T %v, want an integer", cmd, name, v, v)
		}
		*ints[i-1] = n
	}
	if rep.Rule != wantRule {
		t.Errorf("%s: rule %q, want %s", cmd, rep.Rule, wantRule)
	}
	return rep
}

// The JSON rule of TestModelRandomizedJSONIndex: Express connect-redis sessions.
var modelJSONRule = conf.IndexRule{Name: "express", Pattern: "sess:*", JSONPath: "passport.user",
	Layout: "set", IndexKey: "juser:{uid}"}

func (g *modelGen) jsess() string { return "sess:" + strconv.Itoa(g.rng.IntN(modelSessions)) }

// jsonValue is a connect-redis style session value: mostly with a string owner, some numeric
// (integral or not), some without the path, some not JSON at all.
func (g *modelGen) jsonValue() string {
	owner, _ := json.Marshal(g.uid())
	switch r := g.rng.IntN(20); {
	case r < 13:
		return `{"cookie":{"maxAge":86400},"passport":{"user":` + string(owner) + `}}`
	case r < 15:
		return `{"passport":{"user":` + strconv.Itoa(100+g.rng.IntN(40)) + `},"n":1}`
	case r < 16:
		return `{"passport":{"user":12.5}}`
	case r < 18:
		return `{"cookie":{},"passport":{}}`
	default:
		return `{"passport":{"user":"42"` // cut short: not JSON
	}
}

// modelJSONOps adds connect-redis style sessions (strings, the owner inside JSON) to the mix,
// with the in-place string edits that can change their owner, and moves between the two rules.
var modelJSONOps = append(slices.Clone(modelOps), []modelOp{
	{"SET json", 14, func(g *modelGen) []any { return []any{"SET", g.jsess(), g.jsonValue()} }},
	{"SET json EX", 6, func(g *modelGen) []any { return []any{"SET", g.jsess(), g.jsonValue(), "EX", g.longTTL()} }},
	{"SET json KEEPTTL", 3, func(g *modelGen) []any { return []any{"SET", g.jsess(), g.jsonValue(), "KEEPTTL"} }},
	{"SET json XX GET", 2, func(g *modelGen) []any { return []any{"SET", g.jsess(), g.jsonValue(), "XX", "GET"} }},
	{"SETEX json", 2, func(g *modelGen) []any { return []any{"SETEX", g.jsess(), g.shortTTL(), g.jsonValue()} }},
	{"GETSET json", 1, func(g *modelGen) []any { return []any{"GETSET", g.jsess(), g.jsonValue()} }},
	{"MSET json", 1, func(g *modelGen) []any { return []any{"MSET", g.jsess(), g.jsonValue(), g.session(), g.value()} }},
	{"APPEND json", 3, func(g *modelGen) []any {
		return []any{"APPEND", g.jsess(), []string{"}", "x", " ", "}}"}[g.rng.IntN(4)]}
	}},
	// Edits inside the value: characters that keep or break the JSON, never make a number
	// that only Lua's cjson would accept (leading zeros, hex).
	{"SETRANGE json", 3, func(g *modelGen) []any {
		return []any{"SETRANGE", g.jsess(), strconv.Itoa(g.rng.IntN(60)), []string{`"`, "}", "{", " ", "a"}[g.rng.IntN(5)]}
	}},
	{"DEL json", 3, func(g *modelGen) []any { return []any{"DEL", g.jsess(), g.jsess()} }},
	{"GETDEL json", 1, func(g *modelGen) []any { return []any{"GETDEL", g.jsess()} }},
	{"EXPIRE json", 3, func(g *modelGen) []any { return []any{"EXPIRE", g.jsess(), g.shortTTL()} }},
	{"PERSIST json", 1, func(g *modelGen) []any { return []any{"PERSIST", g.jsess()} }},
	{"RENAME json", 2, func(g *modelGen) []any { return []any{"RENAME", g.jsess(), g.jsess()} }},
	{"RENAME across rules", 2, func(g *modelGen) []any {
		if g.rng.IntN(2) == 0 {
			return []any{"RENAME", g.jsess(), g.session()}
		}
		return []any{"RENAME", g.session(), g.jsess()}
	}},
	{"COPY json", 2, func(g *modelGen) []any { return []any{"COPY", g.jsess(), g.jsess(), "REPLACE"} }},
	{"MOVE json", 1, func(g *modelGen) []any { return []any{"MOVE", g.jsess(), g.otherDB()} }},
}...)

// TestModelRandomizedJSONIndex runs the random mix with a second, JSON rule configured (as an
// Express app's sessions next to the seed's hashes): the same concurrency and the same checks,
// for both indexes.
func TestModelRandomizedJSONIndex(t *testing.T) {
	t.Parallel()
	up := redistest.Start(t)
	addr := modelStartProxy(t, up.Addr(), func(c *conf.Config) {
		c.Index.Rules = append(c.Index.Rules, modelJSONRule)
	})
	stats, _, _ := modelRun(t, up.Addr(), addr, modelWorkers/2, func(w *modelWorker) {
		w.helloless, w.tx, w.gen.ops = w.id%2 == 1, true, modelJSONOps
	})
	t.Logf("%d commands: %d pipelines, %d MULTI/EXEC, %d WATCH; %d expected error replies",
		stats.commands.Load(), stats.pipelines.Load(), stats.txs.Load(), stats.watches.Load(), stats.expectedErrs.Load())
	if n := stats.unexpected.Load(); n > 0 {
		t.Errorf("%d unexpected replies, e.g.:\n  %s", n, strings.Join(stats.samples, "\n  "))
	}
	for db := range 2 {
		direct := modelDirect(t, up.Addr(), db)
		truth := modelVerifyIndex(t, direct)
		jowned := 0
		for _, sids := range truth.jindex {
			jowned += len(sids)
		}
		t.Logf("db %d: %d JSON session keys, %d owned by %d users; %d hash session keys", db, truth.jsessions, jowned, len(truth.jindex), truth.sessions)
		if jowned == 0 {
			t.Errorf("db %d holds no owned JSON session: the mix did not exercise the JSON rule", db)
		}
		c := modelClient(t, addr, db, 1, true)
		for _, rule := range []string{"session", "express"} {
			if rep := modelSessionsCheck(t, c, "SESSIONS.CHECK "+rule); rep.Drift() {
				t.Errorf("SESSIONS.CHECK %s in db %d = %+v, want no drift", rule, db, rep)
			}
		}
	}
}

// TestModelSessionsCheckSelectedDB pins down which DB SESSIONS.CHECK looks at: the one the
// client selected. A go-redis client configured with DB 1 connects with HELLO, then SELECT 1.
func TestModelSessionsCheckSelectedDB(t *testing.T) {
	t.Parallel()
	up := redistest.Start(t)
	addr := modelStartProxy(t, up.Addr())
	ctx := context.Background()
	// DB 0: three indexed sessions. DB 1: two indexed sessions, then their index set is deleted
	// behind the proxy's back, so DB 1 has drifted and DB 0 has not.
	db0 := modelClient(t, addr, 0, 1, true)
	for i := range 3 {
		if err := db0.HSet(ctx, fmt.Sprintf("session:a%d", i), "userid", "alice").Err(); err != nil {
			t.Fatal(err)
		}
	}
	setup1 := modelClient(t, addr, 1, 1, true)
	for i := range 2 {
		if err := setup1.HSet(ctx, fmt.Sprintf("session:b%d", i), "userid", "bob").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if n := modelDirect(t, up.Addr(), 1).Del(ctx, "user:bob").Val(); n != 1 {
		t.Fatalf("DEL user:bob in db 1 = %d, want 1 (was the index written?)", n)
	}
	want := modelReport{Rule: "session", Scanned: 2, Missing: 2}
	for _, tc := range []struct {
		name      string
		helloless bool
	}{
		{"shared path (no HELLO)", true},
		{"go-redis default (HELLO, dedicated connection)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := modelClient(t, addr, 1, 1, tc.helloless)
			got := modelSessionsCheck(t, c, "SESSIONS.CHECK")
			got.Millis = 0
			if got != want {
				t.Errorf("SESSIONS.CHECK from a client of db 1 = %+v, want %+v (db 0 would give scanned 3, missing 0)", got, want)
			}
		})
	}
}

// modelIndexedSession writes session:<sid> owned by uid through the proxy client c and checks
// that it was indexed.
func modelIndexedSession(t *testing.T, c, direct *redis.Client, sid, uid string) {
	t.Helper()
	ctx := context.Background()
	if err := c.HSet(ctx, "session:"+sid, "userid", uid).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, err := direct.SIsMember(ctx, "user:"+uid, sid).Result(); err != nil || !ok {
		t.Fatalf("after HSET session:%s userid %s through the proxy, user:%s lacks %s (%v)", sid, uid, uid, sid, err)
	}
}

// TestModelUnseenWritesRepaired checks the README's contract for the writes the proxy does not
// see ("Not seen by the proxy ... covered by repair"): a command that overwrites a session key
// as a side effect, a script that deletes one, or a DEL straight on Redis, leaves a stale entry
// that SESSIONS.CHECK reports and SESSIONS.REINDEX removes, counting it as fixed.
func TestModelUnseenWritesRepaired(t *testing.T) {
	t.Parallel()
	up := redistest.Start(t)
	addr := modelStartProxy(t, up.Addr())
	cases := []struct {
		name     string
		setup    []any // straight on Redis first
		cmd      []any // through the proxy (straight on Redis if straight); it overwrites or deletes session:s
		straight bool
		unseen   bool // the proxy cannot see the write: repair must find and fix it
	}{
		{"DEL straight on Redis", nil, []any{"DEL", "session:s"}, true, true},
		{"SUNIONSTORE", []any{"SADD", "src", "x"}, []any{"SUNIONSTORE", "session:s", "src"}, false, false},
		{"SINTERSTORE", []any{"SADD", "src", "x"}, []any{"SINTERSTORE", "session:s", "src"}, false, false},
		{"SDIFFSTORE", []any{"SADD", "src", "x"}, []any{"SDIFFSTORE", "session:s", "src"}, false, false},
		{"ZUNIONSTORE", []any{"ZADD", "src", "1", "x"}, []any{"ZUNIONSTORE", "session:s", "1", "src"}, false, false},
		{"ZINTERSTORE", []any{"ZADD", "src", "1", "x"}, []any{"ZINTERSTORE", "session:s", "1", "src"}, false, false},
		{"ZDIFFSTORE", []any{"ZADD", "src", "1", "x"}, []any{"ZDIFFSTORE", "session:s", "1", "src"}, false, false},
		{"ZRANGESTORE", []any{"ZADD", "src", "1", "x"}, []any{"ZRANGESTORE", "session:s", "src", "0", "-1"}, false, false},
		{"SORT STORE", []any{"RPUSH", "src", "1"}, []any{"SORT", "src", "STORE", "session:s"}, false, false},
		{"BITOP", []any{"SET", "src", "a"}, []any{"BITOP", "OR", "session:s", "src"}, false, false},
		{"GEOSEARCHSTORE", []any{"GEOADD", "src", "13.36", "38.11", "x"},
			[]any{"GEOSEARCHSTORE", "session:s", "src", "FROMLONLAT", "13.36", "38.11", "BYRADIUS", "10", "km"}, false, false},
		{"EVAL", nil, []any{"EVAL", "return redis.call('DEL', KEYS[1])", "1", "session:s"}, false, true},
	}
	ctx := context.Background()
	direct := modelDirect(t, up.Addr(), 0)
	c := modelClient(t, addr, 0, 1, true)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := direct.FlushDB(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				if err := direct.Do(ctx, tc.setup...).Err(); err != nil {
					t.Fatalf("setup %v: %v", tc.setup, err)
				}
			}
			modelIndexedSession(t, c, direct, "s", "u")
			via := c
			if tc.straight {
				via = direct
			}
			if err := via.Do(ctx, tc.cmd...).Err(); err != nil {
				t.Fatalf("%v: %v", tc.cmd, err)
			}
			if !tc.unseen {
				// Intercepted: the overwrite took the session out of the index in the same step.
				modelVerifyIndex(t, direct)
				if rep := modelSessionsCheck(t, c, "SESSIONS.CHECK"); rep.Drift() {
					t.Errorf("SESSIONS.CHECK after intercepted %v = %+v, want no drift", tc.cmd, rep)
				}
				return
			}
			if rep := modelSessionsCheck(t, c, "SESSIONS.CHECK"); rep.Stale != 1 || rep.Missing != 0 {
				t.Errorf("SESSIONS.CHECK after %v = %+v, want the one stale entry reported", tc.cmd, rep)
			}
			rep := modelSessionsCheck(t, c, "SESSIONS.REINDEX")
			left := direct.SIsMember(ctx, "user:u", "s").Val()
			if rep.Fixed != 1 {
				t.Errorf("SESSIONS.REINDEX after %v = %+v, want fixed 1 (the stale entry is still there: %v)", tc.cmd, rep, left)
			}
			modelVerifyIndex(t, direct)
			if rep := modelSessionsCheck(t, c, "SESSIONS.CHECK"); rep.Stale != 0 || rep.Missing != 0 {
				t.Errorf("SESSIONS.CHECK after REINDEX = %+v, want no drift", rep)
			}
		})
	}
}

// TestModelMigrate: MIGRATE moves a session key to another Redis, deleting it here (unless
// COPY). The README's list of writes the proxy does not see does not name MIGRATE, and the
// planner (rewrite/plan.go) says it lists every command that can delete a session key; so the
// index must follow, as it does for DEL or MOVE.
func TestModelMigrate(t *testing.T) {
	t.Parallel()
	up := redistest.Start(t)
	addr := modelStartProxy(t, up.Addr())
	far := redistest.Start(t)
	farPort := strconv.Itoa(far.Port)
	ctx := context.Background()
	direct := modelDirect(t, up.Addr(), 0)
	c := modelClient(t, addr, 0, 1, true)
	cases := []struct {
		name string
		cmd  []any
		gone bool // the key left this Redis
	}{
		{"MIGRATE", []any{"MIGRATE", "127.0.0.1", farPort, "session:s", "0", "5000"}, true},
		{"MIGRATE KEYS", []any{"MIGRATE", "127.0.0.1", farPort, "", "0", "5000", "KEYS", "session:s"}, true},
		{"MIGRATE COPY", []any{"MIGRATE", "127.0.0.1", farPort, "session:s", "0", "5000", "COPY"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := direct.FlushDB(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := far.Do("FLUSHALL"); err != nil {
				t.Fatal(err)
			}
			modelIndexedSession(t, c, direct, "s", "u")
			if got, err := c.Do(ctx, tc.cmd...).Result(); err != nil || got != "OK" {
				t.Fatalf("%v = %v, %v; want OK", tc.cmd, got, err)
			}
			if n := direct.Exists(ctx, "session:s").Val(); (n == 0) != tc.gone {
				t.Fatalf("after %v, EXISTS session:s = %d", tc.cmd, n)
			}
			modelVerifyIndex(t, direct)
			if rep := modelSessionsCheck(t, c, "SESSIONS.CHECK"); rep.Stale != 0 || rep.Missing != 0 {
				t.Errorf("SESSIONS.CHECK after %v = %+v, want no drift", tc.cmd, rep)
			}
		})
	}
}

// TestModelRewrittenIntegerReplies: a rewritten session write must answer exactly what Redis
// answers (README: "byte for byte"), also for integers beyond 2^53, which a Lua number cannot
// hold. HINCRBY of the owner field is rewritten; the same command on a non-session key is not,
// and gives Redis' own reply. Checked on the shared path (alone: apply.lua; in a pipeline of
// session writes: apply_many.lua) and on a dedicated connection (HELLO: apply.lua by EVAL).
func TestModelRewrittenIntegerReplies(t *testing.T) {
	t.Parallel()
	up := redistest.Start(t)
	addr := modelStartProxy(t, up.Addr())
	ctx := context.Background()
	// Up to 2^53 the reply is exact. Beyond it the reply passes through a Lua number (a double)
	// and comes back rounded, as the README documents; the stored value stays exact, which
	// TestModelRewrittenIntegerBeyond2p53 checks.
	const start, incr = "9007199254740980", 2
	for _, tc := range []struct {
		name      string
		helloless bool
		pipeline  bool
	}{
		{"shared apply", true, false},
		{"shared apply_many", true, true},
		{"dedicated apply", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := modelClient(t, addr, 0, 1, tc.helloless)
			sess, plain := "session:big-"+strings.ReplaceAll(tc.name, " ", "-"), "plain:big-"+strings.ReplaceAll(tc.name, " ", "-")
			for _, k := range []string{sess, plain} {
				if err := c.HSet(ctx, k, "userid", start).Err(); err != nil {
					t.Fatal(err)
				}
			}
			want, err := c.HIncrBy(ctx, plain, "userid", incr).Result()
			if err != nil {
				t.Fatal(err)
			}
			var got int64
			if tc.pipeline {
				var cmd *redis.IntCmd
				_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
					p.HSet(ctx, sess, "seen", "1", "userid", start)
					cmd = p.HIncrBy(ctx, sess, "userid", incr)
					return nil
				})
				got = cmd.Val()
			} else {
				got, err = c.HIncrBy(ctx, sess, "userid", incr).Result()
			}
			if err != nil {
				t.Fatal(err)
			}
			stored := modelDirect(t, up.Addr(), 0).HGet(ctx, sess, "userid").Val()
			if got != want || strconv.FormatInt(got, 10) != stored {
				t.Errorf("HINCRBY %s userid %d through the proxy = %d; Redis answers %d for a plain key and stored %s",
					sess, incr, got, want, stored)
			}
		})
	}
}

// TestModelRewrittenIntegerBeyond2p53 pins the documented limit: HINCRBY of a session's owner
// field beyond 2^53 stores the exact value; only the reply is rounded to a double.
func TestModelRewrittenIntegerBeyond2p53(t *testing.T) {
	t.Parallel()
	up := redistest.Start(t)
	addr := modelStartProxy(t, up.Addr())
	ctx := context.Background()
	c := modelClient(t, addr, 0, 1, true)
	const key = "session:big"
	if err := c.HSet(ctx, key, "userid", "9007199254740993").Err(); err != nil {
		t.Fatal(err)
	}
	got, err := c.HIncrBy(ctx, key, "userid", 2).Result()
	if err != nil {
		t.Fatal(err)
	}
	if stored := modelDirect(t, up.Addr(), 0).HGet(ctx, key, "userid").Val(); stored != "9007199254740995" {
		t.Fatalf("stored %s, want the exact 9007199254740995", stored)
	}
	if got != 9007199254740996 && got != 9007199254740995 {
		t.Fatalf("reply %d is not the value or its double rounding", got)
	}
	if n := modelDirect(t, up.Addr(), 0).SIsMember(ctx, "user:9007199254740995", "big").Val(); !n {
		t.Fatal("the session is not indexed under its exact owner")
	}
}

// TestModelBackfillReindex is the backfill acceptance test: 100,000 sessions written straight
// to Redis (no index), plus stale index garbage, are indexed by SESSIONS.REINDEX through the
// proxy while clients keep writing sessions through it; then nothing has drifted.
func TestModelBackfillReindex(t *testing.T) {
	if testing.Short() {
		t.Skip("backfills 100,000 sessions")
	}
	t.Parallel()
	const (
		sessions = 100_000
		users    = 1000
		fresh    = 2000 // sids above the backfill the writers create
	)
	up := redistest.Start(t)
	addr := modelStartProxy(t, up.Addr())
	ctx := context.Background()
	direct := modelDirect(t, up.Addr(), 0)
	rng := rand.New(rand.NewPCG(1, 2))

	// 1. Backfill straight to Redis: hashes owned by one of 1000 users, 30% with a TTL, 2%
	// strings and 1% without a usable owner; plus stale index entries and owner-map garbage,
	// as a previous deployment might have left behind.
	start := time.Now()
	owned := 0
	p := direct.Pipeline()
	flush := func(force bool) {
		if p.Len() >= 5000 || force && p.Len() > 0 {
			if _, err := p.Exec(ctx); err != nil {
				t.Fatalf("backfill: %v", err)
			}
		}
	}
	for i := range sessions {
		k := "session:" + strconv.Itoa(i)
		switch r := rng.IntN(100); {
		case r < 2:
			p.Set(ctx, k, "not a hash", 0)
		case r < 3:
			p.HSet(ctx, k, "data", "no owner")
		default:
			p.HSet(ctx, k, "userid", strconv.Itoa(rng.IntN(users)), "data", "x")
			owned++
		}
		if rng.IntN(10) < 3 {
			p.Expire(ctx, k, time.Duration(1800+rng.IntN(1800))*time.Second)
		}
		flush(false)
	}
	for i := range 1000 {
		// Entries for sessions that do not exist, and for sessions owned by someone else.
		p.SAdd(ctx, "user:"+strconv.Itoa(rng.IntN(users)), strconv.Itoa(sessions+fresh+i), strconv.Itoa(rng.IntN(sessions)))
		p.HSet(ctx, "sessionproxy:owners", "session:"+strconv.Itoa(sessions+fresh+i), "ghost")
	}
	flush(true)
	t.Logf("backfilled %d sessions (%d owned, %d users) straight to Redis in %v",
		sessions, owned, users, time.Since(start).Round(time.Millisecond))

	// 2. Writers at an application-like pace (a pipeline of 5-50 writes every ~5ms each, about
	// a tenth of them deletions): one plain go-redis client (dedicated path), one without HELLO
	// (shared path).
	stop := make(chan struct{})
	var writes, writeErrs atomic.Int64
	var errSample atomic.Value
	var wg sync.WaitGroup
	for i, helloless := range []bool{false, true} {
		c := modelClient(t, addr, 0, 2, helloless)
		wrng := rand.New(rand.NewPCG(3, uint64(i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			bound := time.After(40 * time.Second)
			for {
				select {
				case <-stop:
					return
				case <-bound:
					return
				default:
				}
				cmds, _ := c.Pipelined(ctx, func(p redis.Pipeliner) error {
					for range 5 + wrng.IntN(46) {
						k := "session:" + strconv.Itoa(wrng.IntN(sessions+fresh))
						switch r := wrng.IntN(20); {
						case r < 12:
							p.HSet(ctx, k, "userid", strconv.Itoa(wrng.IntN(users)))
						case r < 14:
							p.Del(ctx, k)
						case r < 15:
							p.HDel(ctx, k, "userid")
						default:
							p.Expire(ctx, k, time.Duration(600+wrng.IntN(3000))*time.Second)
						}
					}
					return nil
				})
				time.Sleep(5 * time.Millisecond)
				for _, cmd := range cmds {
					writes.Add(1)
					if err := cmd.Err(); err != nil && !strings.HasPrefix(err.Error(), "WRONGTYPE") {
						writeErrs.Add(1)
						errSample.Store(fmt.Sprintf("%v: %v", cmd.Args(), err))
					}
				}
			}
		}()
	}
	if !modelWaitFor(10*time.Second, func() bool { return writes.Load() > 500 }) {
		close(stop)
		wg.Wait()
		t.Fatalf("writers made no progress (%d writes)", writes.Load())
	}

	// 3. REINDEX through the proxy while the writers run.
	admin := modelClient(t, addr, 0, 1, false)
	before := writes.Load()
	start = time.Now()
	rep := modelSessionsCheck(t, admin, "SESSIONS.REINDEX")
	took := time.Since(start)
	during := writes.Load() - before
	close(stop)
	wg.Wait()
	t.Logf("SESSIONS.REINDEX of %d sessions took %v (%.0f sessions/s; report: scanned %d, fixed %d, duration_ms %d) while %d writes went through the proxy",
		sessions, took.Round(time.Millisecond), float64(sessions)/took.Seconds(), rep.Scanned, rep.Fixed, rep.Millis, during)
	if during == 0 {
		t.Error("no write went through the proxy during REINDEX")
	}
	if n := writeErrs.Load(); n > 0 {
		t.Errorf("%d writer commands failed, e.g. %v", n, errSample.Load())
	}
	// A sanity bound only: the writers delete sessions and index some before REINDEX gets to
	// them, the more the slower the machine. No drift (below) is the acceptance criterion.
	if rep.Scanned < sessions/2 || rep.Fixed < int64(owned)/2 {
		t.Errorf("REINDEX report %+v: want most of the %d sessions scanned and most of the %d owned ones indexed", rep, sessions, owned)
	}

	// 4. No drift: SESSIONS.CHECK, and the independent check.
	check := modelSessionsCheck(t, admin, "SESSIONS.CHECK")
	truth := modelVerifyIndex(t, direct)
	if check.Missing != 0 || check.Stale != 0 || check.Orphans != 0 || check.Scanned != int64(truth.sessions) {
		t.Errorf("SESSIONS.CHECK after REINDEX = %+v, want missing 0, stale 0, scanned %d", check, truth.sessions)
	}
	t.Logf("after REINDEX: %d session keys, %d owned by %d users, %d with a deadline; SESSIONS.CHECK took %dms",
		truth.sessions, len(truth.owners), len(truth.index), len(truth.deadlines), check.Millis)
}

func modelWaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// modelReportLine matches one line `sessionproxy check|reindex` prints per rule.
var modelReportLine = regexp.MustCompile(`^rule=(\S+) scanned=(\d+) missing=(\d+) stale=(\d+) orphans=(\d+) fixed=(\d+) duration_ms=(\d+) ?$`)

// modelRunCLI runs `sessionproxy args...` in-process and parses its report line.
func modelRunCLI(t *testing.T, args ...string) (int, modelReport, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	var rep modelReport
	out := strings.TrimSpace(stdout.String())
	if m := modelReportLine.FindStringSubmatch(out); m != nil {
		rep.Rule = m[1]
		for i, p := range []*int64{&rep.Scanned, &rep.Missing, &rep.Stale, &rep.Orphans, &rep.Fixed, &rep.Millis} {
			*p, _ = strconv.ParseInt(m[i+2], 10, 64)
		}
	}
	return code, rep, out + stderr.String()
}

// TestModelRepairCommands drives `sessionproxy check` and `sessionproxy reindex` against an
// index that drifts behind the proxy's back: check exits 3 while anything is missing or stale,
// reindex repairs it, check exits 0 again.
func TestModelRepairCommands(t *testing.T) {
	t.Parallel()
	up := redistest.Start(t)
	addr := modelStartProxy(t, up.Addr())
	ctx := context.Background()
	direct := [2]*redis.Client{modelDirect(t, up.Addr(), 0), modelDirect(t, up.Addr(), 1)}
	// Ten sessions per DB through the proxy: 4 of alice, 6 of bob.
	for db := range 2 {
		c := modelClient(t, addr, db, 1, true)
		for i := range 10 {
			owner := "bob"
			if i < 4 {
				owner = "alice"
			}
			if err := c.HSet(ctx, "session:"+strconv.Itoa(i), "userid", owner).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	u := up.Addr()
	steps := []struct {
		name    string
		drift   func() // straight on Redis, before the command
		args    []string
		code    int
		missing int64
		stale   int64
		fixed   int64 // checked when >= 0
	}{
		{"clean check", nil, []string{"check", "-upstream", u}, 0, 0, 0, 0},
		{"user set deleted", func() { direct[0].Del(ctx, "user:alice") },
			[]string{"check", "-upstream", u}, 3, 4, 0, 0},
		{"other DB unaffected", nil, []string{"check", "-upstream", u, "-db", "1"}, 0, 0, 0, 0},
		// reindex reports what it found wrong before it fixed it
		{"reindex", nil, []string{"reindex", "-upstream", u}, 0, 4, 0, 4},
		{"check after reindex", nil, []string{"check", "-upstream", u}, 0, 0, 0, 0},
		{"stale entries", func() { direct[1].SAdd(ctx, "user:bob", "0", "404") },
			[]string{"check", "-upstream", u, "-db", "1", "-rule", "session"}, 3, 0, 2, 0},
		{"db 0 unaffected", nil, []string{"check", "-upstream", u}, 0, 0, 0, 0},
		{"reindex db 1", nil, []string{"reindex", "-upstream", u, "-db", "1", "-batch", "3"}, 0, 0, 2, 2},
		{"check db 1 after reindex", nil, []string{"check", "-upstream", u, "-db", "1"}, 0, 0, 0, 0},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.drift != nil {
				st.drift()
			}
			code, rep, out := modelRunCLI(t, st.args...)
			t.Logf("sessionproxy %s -> %d: %s", strings.Join(st.args, " "), code, out)
			if code != st.code {
				t.Errorf("exit code %d, want %d", code, st.code)
			}
			if rep.Rule != "session" {
				t.Fatalf("no report line in the output %q", out)
			}
			if rep.Scanned != 10 || rep.Missing != st.missing || rep.Stale != st.stale || rep.Fixed != st.fixed {
				t.Errorf("report %+v, want scanned 10, missing %d, stale %d, fixed %d", rep, st.missing, st.stale, st.fixed)
			}
		})
	}
	// The repaired index is the one the sessions imply.
	for db := range 2 {
		modelVerifyIndex(t, direct[db])
	}
	t.Run("usage errors", func(t *testing.T) {
		for _, args := range [][]string{
			{"check", "-upstream", u, "-rule", "nosuch"},
			{"reindex", "-nosuchflag"},
			{"check", "-upstream", "not-an-address"},
		} {
			if code, _, out := modelRunCLI(t, args...); code != 2 {
				t.Errorf("sessionproxy %s -> %d (%s), want 2", strings.Join(args, " "), code, out)
			}
		}
	})
}
