package main

// End-to-end tests of the expiry reaper: in-process sessionproxy nodes wired the way serve()
// wires them (proxy server and reaper under one context, sharing the upstream clients and one
// metrics registry), real redis-server processes, sessions written through the proxy as raw
// RESP pipelines (no HELLO: the proxy's shared upstream path) or with go-redis (which sends
// HELLO: a dedicated upstream connection). Every wait is bounded and polls; timing is asserted
// with generous margins and the observed lags are logged.

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/sessionproxy/sessionproxy/conf"
	"github.com/sessionproxy/sessionproxy/internal/promtest"
	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/syncbuf"
	"github.com/sessionproxy/sessionproxy/proxy"
	"github.com/sessionproxy/sessionproxy/reaper"
)

// Names of the reaper's metrics.
const (
	reapMCleanups   = "sessionproxy_reaper_cleanups_total"
	reapMLag        = "sessionproxy_reaper_lag_seconds"
	reapMStale      = "sessionproxy_reaper_stale_entries_total"
	reapMReconnects = "sessionproxy_reaper_subscription_reconnects_total"
	reapMEvictedOwn = "sessionproxy_reaper_evicted_bookkeeping_total"
	reapMRepairs    = "sessionproxy_reaper_eviction_repairs_total"
	reapLeaseKey    = "sessionproxy:reaper-lease"
	reapOwnersKey   = "sessionproxy:owners"
	reapLedgerKey   = "sessionproxy:deadlines"
)

// reapNode is one sessionproxy process, in-process: the proxy (optional) and the reaper.
type reapNode struct {
	t       testing.TB
	Addr    string // the proxy's client listener; "" for a reaper alone
	reg     *prometheus.Registry
	rp      *reaper.Reaper
	ups     *upstreams
	logs    *syncbuf.Buffer
	scripts atomic.Int64 // reap.lua calls made by this node's reaper (EVALSHA)

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// reapStartNode starts a node in front of upstream; withProxy false runs the reaper alone.
// tweak adjusts the config (conf.Default() with loopback listeners otherwise).
func reapStartNode(t testing.TB, upstream string, withProxy bool, tweak func(*conf.Config)) *reapNode {
	t.Helper()
	cfg := conf.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Metrics = ""
	cfg.Upstream.Addr = upstream
	cfg.ShutdownTimeout = conf.Duration(5 * time.Second)
	if tweak != nil {
		tweak(&cfg)
	}
	n := &reapNode{t: t, reg: prometheus.NewRegistry(), logs: &syncbuf.Buffer{}, done: make(chan error, 1)}
	logger := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// As in serve(): options, upstreams, the repair hook, the server, the reaper.
	opts, err := proxyOptions(cfg, logger, n.reg)
	if err != nil {
		t.Fatalf("proxyOptions: %v", err)
	}
	n.ups = newUpstreams(cfg.Upstream, opts.TLS)
	opts.Repair = repairFunc(n.ups)
	var srv *proxy.Server
	if withProxy {
		if srv, err = proxy.New(opts); err != nil {
			t.Fatalf("proxy.New: %v", err)
		}
	}
	hook := reapScriptHook{sha: opts.Schema.Scripts().Reap.SHA, n: &n.scripts}
	for db := range 16 {
		n.ups.db(db).AddHook(hook)
	}
	n.rp, err = reaper.New(reaper.Options{Schema: opts.Schema, DB: n.ups.db, Interval: cfg.Reaper.Interval.D(),
		Batch: cfg.Reaper.Batch, Notifications: cfg.Reaper.Notifications, Logger: logger, Registerer: n.reg})
	if err != nil {
		t.Fatalf("reaper.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	g, gctx := errgroup.WithContext(ctx)
	if srv != nil {
		g.Go(func() error { return srv.Run(gctx) })
	}
	g.Go(func() error { return n.rp.Run(gctx) })
	go func() { n.done <- g.Wait() }()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("node %s log (tail):\n%s", n.rp, n.logs.Tail(6<<10))
		}
	})
	if srv != nil {
		addr := make(chan string, 1)
		go func() { addr <- srv.Addr().String() }()
		select {
		case n.Addr = <-addr:
		case err := <-n.done:
			t.Fatalf("node did not start: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("proxy did not listen within 10s")
		}
	}
	return n
}

// stop shuts the node down the way SIGTERM does: cancel, wait for Run, close the upstreams.
func (n *reapNode) stop() {
	n.once.Do(func() {
		n.cancel()
		n.wait()
		n.ups.Close()
	})
}

// crash stops the node as a dying process would: its connections go first, so nothing it does
// on the way out (such as releasing the lease) reaches Redis.
func (n *reapNode) crash() {
	n.once.Do(func() {
		n.ups.Close()
		n.cancel()
		n.wait()
	})
}

func (n *reapNode) wait() {
	select {
	case err := <-n.done:
		if err != nil {
			n.t.Errorf("node Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		n.t.Error("node did not stop within 15s")
	}
}

// token is the node's lease value (Reaper.String is "reaper(<token>)").
func (n *reapNode) token() string {
	return strings.TrimSuffix(strings.TrimPrefix(n.rp.String(), "reaper("), ")")
}

func (n *reapNode) metric(name string, labels ...string) float64 {
	n.t.Helper()
	return reapMetric(n.t, n.reg, name, labels...)
}

// cleanups is the node's cleanups_total over both paths.
func (n *reapNode) cleanups() float64 { return n.metric(reapMCleanups) }

// counted waits (up to 2s) until n has counted want cleanups and returns its count: a reaper
// counts cleanups after its script has returned, so the book can be seen empty a moment before
// the counter catches up.
func (n *reapNode) counted(want float64) float64 {
	reapEventually(2*time.Second, func() bool { return n.cleanups() >= want })
	return n.cleanups()
}

// reapScriptHook counts the reap.lua calls a reaper's clients send.
type reapScriptHook struct {
	sha string
	n   *atomic.Int64
}

func (h reapScriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h reapScriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h reapScriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); len(a) > 1 && a[1] == any(h.sha) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

// reapMetric sums the samples of a metric family whose labels include every "k=v" of want; for a
// histogram, the sample counts.
func reapMetric(t testing.TB, reg *prometheus.Registry, name string, want ...string) float64 {
	t.Helper()
	sum, _ := reapGather(t, reg, name, want...)
	return sum
}

// reapLagMean is the mean of a lag histogram: sample sum / count (0 when empty).
func reapLagMean(t testing.TB, reg *prometheus.Registry, path string) (time.Duration, int) {
	t.Helper()
	count, total := reapGather(t, reg, reapMLag, "path="+path)
	if count == 0 {
		return 0, 0
	}
	return time.Duration(total / count * float64(time.Second)).Round(time.Millisecond), int(count)
}

// reapGather returns a metric's summed value (histogram: count) and, for histograms, the summed
// sample sum.
func reapGather(t testing.TB, reg *prometheus.Registry, name string, want ...string) (value, histSum float64) {
	t.Helper()
	value, histSum, err := promtest.Sum(reg, name, want...)
	if err != nil {
		t.Fatal(err)
	}
	return value, histSum
}

// reapClient is a go-redis client of the proxy (or of Redis itself, for setup and checks).
func reapClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, PoolSize: 4, MaxRetries: -1,
		DialTimeout: 2 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// reapSession is one session a test writes: session:<id> owned by uid, with a TTL.
type reapSession struct {
	id, uid string
	ttl     time.Duration
}

func (s reapSession) key() string { return "session:" + s.id }

// reapSessions makes n sessions "<prefix><i>" for users u0..u<users-1> with TTLs drawn from
// [minTTL, maxTTL].
func reapSessions(prefix string, n, users int, minTTL, maxTTL time.Duration, rng *rand.Rand) []reapSession {
	out := make([]reapSession, n)
	for i := range out {
		out[i] = reapSession{id: prefix + strconv.Itoa(i), uid: "u" + strconv.Itoa(i%users),
			ttl: minTTL + time.Duration(rng.Int64N(int64(maxTTL-minTTL)+1))}
	}
	return out
}

// reapPipe sends a pipeline of commands and fails on any error reply.
type reapPipe interface {
	pipeline(cmds [][]string) error
}

// reapRaw is a plain RESP connection without HELLO (as redis-py or Jedis open them), so the proxy
// keeps it on its shared upstream path. Every reply the tests expect from it is one line.
type reapRaw struct {
	mu sync.Mutex
	nc net.Conn
	br *bufio.Reader
}

func reapDialRaw(t testing.TB, addr string) *reapRaw {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &reapRaw{nc: nc, br: bufio.NewReader(nc)}
}

func (c *reapRaw) pipeline(cmds [][]string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b []byte
	for _, cmd := range cmds {
		b = fmt.Appendf(b, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	_ = c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		return err
	}
	for i := range cmds {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("reply %d of %d: %w", i+1, len(cmds), err)
		}
		if line[0] != ':' && line[0] != '+' {
			return fmt.Errorf("%v: %q", cmds[i], strings.TrimSpace(line))
		}
	}
	return nil
}

// reapGoRedis pipes through a go-redis client (which sends HELLO: the proxy gives it a
// dedicated upstream connection).
type reapGoRedis struct{ c *redis.Client }

func (g reapGoRedis) pipeline(cmds [][]string) error {
	ctx := context.Background()
	res, err := g.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, cmd := range cmds {
			args := make([]any, len(cmd))
			for i, a := range cmd {
				args[i] = a
			}
			p.Do(ctx, args...)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err() != nil {
			return fmt.Errorf("%v: %w", r.Args(), r.Err())
		}
	}
	return nil
}

// reapWrite writes sessions through p (HSET userid + data, then PEXPIRE), pipelined in chunks,
// failing the test on any error reply.
func reapWrite(t testing.TB, p reapPipe, sessions []reapSession, payload string) {
	t.Helper()
	if err := reapTryWrite(p, sessions, payload, 250); err != nil {
		t.Fatalf("write sessions: %v", err)
	}
}

// reapTryWrite writes sessions in pipelines of chunk sessions; a session with a zero ttl gets
// none.
func reapTryWrite(p reapPipe, sessions []reapSession, payload string, chunk int) error {
	for start := 0; start < len(sessions); start += chunk {
		var cmds [][]string
		for _, s := range sessions[start:min(start+chunk, len(sessions))] {
			cmds = append(cmds, []string{"HSET", s.key(), "userid", s.uid, "data", payload})
			if s.ttl > 0 {
				cmds = append(cmds, []string{"PEXPIRE", s.key(), strconv.FormatInt(s.ttl.Milliseconds(), 10)})
			}
		}
		if err := p.pipeline(cmds); err != nil {
			return err
		}
	}
	return nil
}

// reapBook is the proxy's bookkeeping in DB 0: index entries (over every user:* set), owner-map
// and ledger entries.
type reapBook struct{ index, owners, ledger int64 }

func (b reapBook) empty() bool { return b == reapBook{} }

func reapBookOf(t testing.TB, rdb *redis.Client) reapBook {
	t.Helper()
	ctx := context.Background()
	var b reapBook
	for _, k := range reapScan(t, rdb, "user:*") {
		b.index += rdb.SCard(ctx, k).Val()
	}
	b.owners = rdb.HLen(ctx, reapOwnersKey).Val()
	b.ledger = rdb.ZCard(ctx, reapLedgerKey).Val()
	return b
}

// reapScan returns every key matching pattern (bounded: at most 10,000 SCAN calls).
func reapScan(t testing.TB, rdb *redis.Client, pattern string) []string {
	t.Helper()
	var out []string
	var cursor uint64
	for range 10000 {
		keys, next, err := rdb.Scan(context.Background(), cursor, pattern, 1000).Result()
		if err != nil {
			t.Fatalf("SCAN %s: %v", pattern, err)
		}
		out = append(out, keys...)
		if cursor = next; cursor == 0 {
			return out
		}
	}
	t.Fatalf("SCAN %s did not finish", pattern)
	return nil
}

// reapLastDeadline is the latest deadline in the ledger.
func reapLastDeadline(t testing.TB, rdb *redis.Client) time.Time {
	t.Helper()
	z, err := rdb.ZRangeWithScores(context.Background(), reapLedgerKey, -1, -1).Result()
	if err != nil || len(z) == 0 {
		t.Fatalf("ledger is empty (err %v)", err)
	}
	return time.UnixMilli(int64(z[0].Score))
}

// reapUntilEmpty polls the bookkeeping until it is empty, at most until limit; it returns when
// it was first seen empty (the zero time if never) and the last state seen.
func reapUntilEmpty(t testing.TB, rdb *redis.Client, limit time.Time) (time.Time, reapBook) {
	t.Helper()
	var b reapBook
	for {
		b = reapBookOf(t, rdb)
		if b.empty() {
			return time.Now(), b
		}
		if time.Now().After(limit) {
			return time.Time{}, b
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// reapEventually polls cond every 25ms until it holds or timeout passes.
func reapEventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func reapNotifyFlags(rdb *redis.Client) string {
	return rdb.ConfigGet(context.Background(), "notify-keyspace-events").Val()["notify-keyspace-events"]
}

// reapHasFlags: the keyevent (E) and expired (x) classes are on (x may come from A).
func reapHasFlags(flags string) bool {
	return strings.Contains(flags, "E") && (strings.Contains(flags, "x") || strings.Contains(flags, "A"))
}

// reapLogLags logs a node's cleanups and mean lags by path.
func reapLogLags(t testing.TB, n *reapNode) {
	t.Helper()
	ev, evN := reapLagMean(t, n.reg, "event")
	sw, swN := reapLagMean(t, n.reg, "sweep")
	t.Logf("%s: cleanups event=%d (mean lag %v) sweep=%d (mean lag %v); reap scripts %d",
		n.rp, evN, ev, swN, sw, n.scripts.Load())
}

// Acceptance 1: 1,000 sessions of 50 users with TTLs of 1-3s, written through the proxy, leave
// the index, owner map and ledger within 2s of the last deadline (asserted with a margin: 6s),
// with keyspace notifications and with the sweep alone.
func TestReapExpiryCleanup(t *testing.T) {
	for _, tc := range []struct {
		name          string
		notifications bool
	}{
		{"events and sweep", true},
		{"sweep only", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := redistest.Start(t, "--notify-keyspace-events", "")
			rdb := reapClient(t, up.Addr())
			node := reapStartNode(t, up.Addr(), true, func(c *conf.Config) { c.Reaper.Notifications = tc.notifications })
			if tc.notifications && !reapEventually(5*time.Second, func() bool { return reapHasFlags(reapNotifyFlags(rdb)) }) {
				t.Fatalf("notify-keyspace-events = %q 5s after start", reapNotifyFlags(rdb))
			}
			sessions := reapSessions("s", 1000, 50, time.Second, 3*time.Second, rand.New(rand.NewPCG(1, 1)))
			start := time.Now()
			reapWrite(t, reapDialRaw(t, node.Addr), sessions, "payload")
			if took := time.Since(start); took < 800*time.Millisecond {
				if b := reapBookOf(t, rdb); b != (reapBook{1000, 1000, 1000}) {
					t.Fatalf("after writing 1000 sessions (in %v): %+v, want 1000 of each", took, b)
				}
			} else {
				t.Logf("writing took %v: some sessions may have expired already, count not checked", took)
			}
			last := reapLastDeadline(t, rdb)
			seen, b := reapUntilEmpty(t, rdb, last.Add(6*time.Second))
			if seen.IsZero() {
				t.Fatalf("6s after the last deadline: %+v left", b)
			}
			lag := seen.Sub(last).Round(time.Millisecond)
			t.Logf("everything gone %v after the last deadline (spec: 2s)", lag)
			reapLogLags(t, node)
			if lag > 2*time.Second {
				t.Logf("NOTE: lag %v exceeds the 2s target (tolerated up to 6s on a loaded test host)", lag)
			}
			if got := node.counted(1000); got != 1000 {
				t.Errorf("cleanups_total = %v, want 1000 (each session once)", got)
			}
			flags := reapNotifyFlags(rdb)
			if tc.notifications {
				if got := node.metric(reapMCleanups, "path=event"); got == 0 {
					t.Error("no cleanup went through the event path")
				}
				if !reapHasFlags(flags) {
					t.Errorf("notify-keyspace-events = %q", flags)
				}
			} else {
				if got := node.metric(reapMCleanups, "path=event"); got != 0 {
					t.Errorf("event cleanups = %v with notifications off", got)
				}
				if flags != "" {
					t.Errorf("notify-keyspace-events = %q: a reaper without notifications changed it", flags)
				}
			}
		})
	}
}

// Acceptance 2a: sessions expire while no proxy runs (and Redis deletes some on access, so their
// events are lost for good); a reaper started afterwards cleans everything up.
func TestReapCatchUpAfterDowntime(t *testing.T) {
	up := redistest.Start(t)
	rdb := reapClient(t, up.Addr())
	ctx := context.Background()
	first := reapStartNode(t, up.Addr(), true, nil)
	sessions := reapSessions("down", 1000, 50, time.Second, 2*time.Second, rand.New(rand.NewPCG(2, 2)))
	reapWrite(t, reapDialRaw(t, first.Addr), sessions, "payload")
	first.stop()
	before := reapBookOf(t, rdb)
	last := reapLastDeadline(t, rdb)
	time.Sleep(time.Until(last.Add(300 * time.Millisecond)))
	// Every other session is read now: Redis deletes it and publishes "expired" to nobody.
	var gone int
	for i := 0; i < len(sessions); i += 2 {
		if rdb.Exists(ctx, sessions[i].key()).Val() == 0 {
			gone++
		}
	}
	if gone != len(sessions)/2 {
		t.Fatalf("%d of %d read sessions were gone past their deadline", gone, len(sessions)/2)
	}
	if after := reapBookOf(t, rdb); after != before || before.ledger == 0 {
		t.Fatalf("bookkeeping changed while no reaper ran: %+v -> %+v", before, after)
	}
	t.Logf("left behind while down: %+v", before)
	start := time.Now()
	second := reapStartNode(t, up.Addr(), false, nil)
	seen, b := reapUntilEmpty(t, rdb, time.Now().Add(6*time.Second))
	if seen.IsZero() {
		t.Fatalf("6s after a new reaper started: %+v left", b)
	}
	t.Logf("new reaper cleaned the backlog in %v", seen.Sub(start).Round(time.Millisecond))
	reapLogLags(t, second)
	if got := second.counted(float64(before.ledger)); got != float64(before.ledger) {
		t.Errorf("new reaper's cleanups_total = %v, want %d (each left-over session once)", got, before.ledger)
	}
}

// Acceptance 2b: redis-server killed and restarted (AOF, so the data survives; the CONFIG SET of
// notify-keyspace-events does not) under a running proxy and reaper while sessions expire: the
// subscription and the notification config come back, and nothing leaks.
func TestReapRedisRestart(t *testing.T) {
	up := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	rdb := reapClient(t, up.Addr())
	node := reapStartNode(t, up.Addr(), true, nil)
	cl := reapClient(t, node.Addr)
	if !reapEventually(5*time.Second, func() bool { return reapHasFlags(reapNotifyFlags(rdb)) }) {
		t.Fatalf("notify-keyspace-events = %q 5s after start", reapNotifyFlags(rdb))
	}
	sessions := reapSessions("rs", 1000, 50, 800*time.Millisecond, 3*time.Second, rand.New(rand.NewPCG(3, 3)))
	reapWrite(t, reapDialRaw(t, node.Addr), sessions, "payload")
	last := reapLastDeadline(t, rdb)
	reconnects := node.metric(reapMReconnects)

	// Redis dies while the first sessions fall due, and is back before the last ones.
	up.Stop() // SIGKILL
	time.Sleep(time.Second)
	up.Restart()
	if time.Now().After(last) {
		t.Logf("restart completed after the last deadline")
	}
	if b := reapBookOf(t, rdb); b.owners == 0 && b.ledger == 0 {
		t.Fatalf("bookkeeping did not survive the restart (AOF): %+v", b)
	}
	// The new process started without the setting; the reaper sets it again (INFO commandstats
	// starts afresh with the process, so a CONFIG SET counted there came after the restart).
	if !reapEventually(10*time.Second, func() bool { return reapHasFlags(reapNotifyFlags(rdb)) }) {
		t.Errorf("notify-keyspace-events = %q 10s after the restart: not re-enabled", reapNotifyFlags(rdb))
	}
	if stats := rdb.Info(context.Background(), "commandstats").Val(); !strings.Contains(stats, "cmdstat_config|set:calls=") {
		t.Errorf("no CONFIG SET on the restarted Redis:\n%s", stats)
	}
	if !reapEventually(10*time.Second, func() bool { return node.metric(reapMReconnects) > reconnects }) {
		t.Errorf("subscription_reconnects_total stayed %v after the restart", reconnects)
	}
	seen, b := reapUntilEmpty(t, rdb, last.Add(10*time.Second))
	if seen.IsZero() {
		t.Fatalf("10s after the last deadline (1s of it Redis down): %+v left", b)
	}
	t.Logf("everything gone %v after the last deadline, across a 1s outage", seen.Sub(last).Round(time.Millisecond))

	// The event path works on the restarted Redis: new sessions are cleaned through it.
	if !reapEventually(10*time.Second, func() bool { return cl.Ping(context.Background()).Err() == nil }) {
		t.Fatal("proxy does not answer PING 10s after the restart")
	}
	events := node.metric(reapMCleanups, "path=event")
	more := reapSessions("rs2-", 200, 20, time.Second, 1500*time.Millisecond, rand.New(rand.NewPCG(4, 4)))
	var err error
	for range 20 { // the proxy's pooled upstream connections may still be failing over
		if err = reapTryWrite(reapGoRedis{cl}, more, "payload", 250); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("writes through the proxy still fail after the restart: %v", err)
	}
	last = reapLastDeadline(t, rdb)
	if seen, b := reapUntilEmpty(t, rdb, last.Add(6*time.Second)); seen.IsZero() {
		t.Fatalf("sessions written after the restart: %+v left 6s after the last deadline", b)
	}
	reapEventually(2*time.Second, func() bool { return node.metric(reapMCleanups, "path=event") > events })
	if got := node.metric(reapMCleanups, "path=event"); got <= events {
		t.Errorf("no event-path cleanup after the restart (event cleanups %v before, %v after)", events, got)
	}
	reapLogLags(t, node)
	t.Logf("subscription_reconnects_total: %v -> %v", reconnects, node.metric(reapMReconnects))
	want := float64(len(sessions) + len(more))
	if got := node.counted(want); got != want {
		t.Errorf("cleanups_total = %v, want %v (each session once)", got, want)
	}
}

// Acceptance 2c: two proxies on one Redis, 10,000 sessions expiring within a few seconds: no
// leaks, one lease holder does all the work (cleanups and reap scripts of the other: 0), and when
// the holder dies without releasing, the other takes over within a few seconds; alone then, it
// leads without the lease key, which lapses and is not written again.
func TestReapTwoProxiesShareWork(t *testing.T) {
	up := redistest.Start(t)
	rdb := reapClient(t, up.Addr())
	ctx := context.Background()
	a := reapStartNode(t, up.Addr(), true, nil)
	b := reapStartNode(t, up.Addr(), true, nil)
	nodes := map[string]*reapNode{a.token(): a, b.token(): b}
	holderOf := func() *reapNode { return nodes[rdb.Get(ctx, reapLeaseKey).Val()] }
	var holder, standby *reapNode
	settled := func() bool {
		if holder = holderOf(); holder == nil {
			return false
		}
		standby = a
		if holder == a {
			standby = b
		}
		return holder.rp.Leading() && !standby.rp.Leading()
	}
	if !reapEventually(5*time.Second, settled) {
		t.Fatalf("no single node holds the lease 5s after start (value %q, leading: a %v, b %v)",
			rdb.Get(ctx, reapLeaseKey).Val(), a.rp.Leading(), b.rp.Leading())
	}
	// The node started first may have swept alone before it saw the other: the standby's
	// scripts are counted from here.
	standbyScripts := standby.scripts.Load()

	// 1. 10,000 sessions, half through each proxy, without a TTL (each write is an atomic
	// script: this takes a while), then 2. PEXPIREAT to deadlines spread over 3s that begin
	// once the second pass is surely over, so they all expire within a few seconds.
	rng := rand.New(rand.NewPCG(5, 5))
	sessions := reapSessions("two", 10000, 500, 0, 0, rng)
	pipes := []reapPipe{reapDialRaw(t, a.Addr), reapDialRaw(t, b.Addr)}
	start := time.Now()
	var g errgroup.Group
	for i, p := range pipes {
		g.Go(func() error { return reapTryWrite(p, sessions[i*5000:(i+1)*5000], "payload", 250) })
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("write sessions: %v", err)
	}
	pass := time.Since(start)
	from := time.Now().Add(2*pass + 1500*time.Millisecond)
	at := make([]time.Time, len(sessions))
	for i := range at {
		at[i] = from.Add(time.Duration(rng.Int64N(int64(3 * time.Second))))
	}
	for i, p := range pipes {
		g.Go(func() error {
			for j := i * 5000; j < (i+1)*5000; j += 500 {
				var cmds [][]string
				for k := j; k < j+500; k++ {
					cmds = append(cmds, []string{"PEXPIREAT", sessions[k].key(), strconv.FormatInt(at[k].UnixMilli(), 10)})
				}
				if err := p.pipeline(cmds); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("PEXPIREAT: %v", err)
	}
	// On a loaded host the pass may overrun the first deadlines: a PEXPIREAT to a past time
	// deletes the session itself (no reaper cleanup), so the count below is then approximate.
	late := time.Since(from)
	if late > 0 {
		t.Logf("the PEXPIREAT pass ended %v after the first deadline (first pass took %v)", late, pass)
	} else if bk := reapBookOf(t, rdb); bk != (reapBook{10000, 10000, 10000}) {
		t.Fatalf("before the deadlines: %+v, want 10000 of each", bk)
	}
	t.Logf("10,000 sessions written in %v, deadlines from %v later over 3s", pass.Round(time.Millisecond), time.Until(from).Round(time.Millisecond))
	last := reapLastDeadline(t, rdb)
	var flips int
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() { // the lease must stay with one holder throughout
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if h := holderOf(); h != nil && h != holder {
				flips++
				holder = h
			}
		}
	}()
	seen, bk := reapUntilEmpty(t, rdb, last.Add(8*time.Second))
	close(stopWatch)
	<-watched
	if seen.IsZero() {
		t.Fatalf("8s after the last deadline: %+v left", bk)
	}
	t.Logf("10,000 sessions gone %v after the last deadline", seen.Sub(last).Round(time.Millisecond))
	reapLogLags(t, holder)
	reapLogLags(t, standby)
	if flips > 0 {
		t.Errorf("the lease changed hands %d times while both nodes ran", flips)
	}
	// Counted after the book empties, as in reapNode.counted.
	reapEventually(2*time.Second, func() bool { return holder.cleanups()+standby.cleanups() >= 10000 })
	total := holder.cleanups() + standby.cleanups()
	if late <= 0 && total != 10000 || total > 10000 || total < 9500 {
		t.Errorf("cleanups across both nodes = %v (holder %v, standby %v), want 10000: each session once",
			total, holder.cleanups(), standby.cleanups())
	}
	if standby.cleanups() != 0 || standby.scripts.Load() != standbyScripts {
		t.Errorf("standby did work: %v cleanups, %d reap scripts", standby.cleanups(), standby.scripts.Load()-standbyScripts)
	}
	if holder.scripts.Load() == 0 {
		t.Error("holder sent no reap script")
	}

	// The holder dies without releasing the lease; the standby takes over once it expires.
	died := time.Now()
	holder.crash()
	if v := rdb.Get(ctx, reapLeaseKey).Val(); v != holder.token() {
		t.Fatalf("lease value %q right after the holder died, want the dead holder's %q", v, holder.token())
	}
	if !reapEventually(8*time.Second, standby.rp.Leading) {
		t.Fatalf("standby did not lead within 8s of the holder's death (lease value %q)", rdb.Get(ctx, reapLeaseKey).Val())
	}
	t.Logf("standby took over %v after the holder died", time.Since(died).Round(time.Millisecond))
	if !reapEventually(5*time.Second, func() bool { return rdb.Exists(ctx, reapLeaseKey).Val() == 0 }) {
		t.Errorf("the dead holder's lease key is still there 5s after its death (value %q)", rdb.Get(ctx, reapLeaseKey).Val())
	}
	before := standby.cleanups()
	more := reapSessions("two-after", 200, 20, time.Second, time.Second, rng)
	reapWrite(t, reapDialRaw(t, standby.Addr), more, "payload")
	last = reapLastDeadline(t, rdb)
	if seen, bk := reapUntilEmpty(t, rdb, last.Add(6*time.Second)); seen.IsZero() {
		t.Fatalf("after the takeover: %+v left 6s after the last deadline", bk)
	}
	if got := standby.counted(before+200) - before; got != 200 {
		t.Errorf("new holder cleaned %v sessions, want 200", got)
	}
}

// Acceptance 2d: a session whose TTL is extended straight on Redis stays indexed when its old
// deadline passes, and its ledger entry moves to the new deadline; one whose TTL is removed stays
// indexed and leaves the ledger.
func TestReapTTLChangedBehindProxy(t *testing.T) {
	up := redistest.Start(t)
	rdb := reapClient(t, up.Addr())
	ctx := context.Background()
	node := reapStartNode(t, up.Addr(), true, nil)
	cl := reapClient(t, node.Addr)
	sessions := []reapSession{
		{id: "extended", uid: "u1", ttl: time.Second},
		{id: "persisted", uid: "u1", ttl: time.Second},
		{id: "control", uid: "u1", ttl: time.Second},
	}
	reapWrite(t, reapGoRedis{cl}, sessions, "payload")
	old := reapLastDeadline(t, rdb)
	if err := rdb.Expire(ctx, "session:extended", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Persist(ctx, "session:persisted").Err(); err != nil {
		t.Fatal(err)
	}
	newDeadline := float64(rdb.PExpireTime(ctx, "session:extended").Val().Milliseconds())
	settled := func() bool {
		return !rdb.SIsMember(ctx, "user:u1", "control").Val() &&
			rdb.ZScore(ctx, reapLedgerKey, "session:extended").Val() == newDeadline &&
			rdb.ZScore(ctx, reapLedgerKey, "session:persisted").Err() == redis.Nil
	}
	if !reapEventually(time.Until(old.Add(6*time.Second)), settled) {
		t.Errorf("6s after the old deadline: control indexed %v, extended ledger score %v (want %v), persisted in ledger %v",
			rdb.SIsMember(ctx, "user:u1", "control").Val(), rdb.ZScore(ctx, reapLedgerKey, "session:extended").Val(),
			newDeadline, rdb.ZScore(ctx, reapLedgerKey, "session:persisted").Err() == nil)
	}
	for _, id := range []string{"extended", "persisted"} {
		if !rdb.SIsMember(ctx, "user:u1", id).Val() {
			t.Errorf("%s left the index", id)
		}
		if got := rdb.HGet(ctx, reapOwnersKey, "session:"+id).Val(); got != "u1" {
			t.Errorf("owner map entry of %s = %q, want u1", id, got)
		}
	}
	list, err := cl.Do(ctx, "SESSIONS.LIST", "u1").StringSlice()
	if err != nil || !slices.Equal(list, []string{"extended", "persisted"}) {
		t.Errorf("SESSIONS.LIST u1 = %v (err %v), want [extended persisted]", list, err)
	}
	if got := node.metric(reapMStale); got < 2 {
		t.Errorf("stale_entries_total = %v, want >= 2 (both re-scored or dropped from the ledger)", got)
	}
}

// reapDrift compares the bookkeeping of DB 0 with the sessions that exist and lists every
// difference: of the index and owner map, and of the ledger (both empty: the bookkeeping matches
// the surviving sessions).
func reapDrift(t testing.TB, rdb *redis.Client) (index, ledger []string) {
	t.Helper()
	ctx := context.Background()
	owner := map[string]string{} // live session key -> owner
	ttl := map[string]bool{}
	for _, k := range reapScan(t, rdb, "session:*") {
		uid, err := rdb.HGet(ctx, k, "userid").Result()
		if err != nil {
			continue // evicted between SCAN and HGET, or no owner
		}
		owner[k] = uid
		ttl[k] = rdb.PTTL(ctx, k).Val() > 0
	}
	indexed := map[string]bool{}
	for _, ik := range reapScan(t, rdb, "user:*") {
		uid := strings.TrimPrefix(ik, "user:")
		for _, m := range rdb.SMembers(ctx, ik).Val() {
			k := "session:" + m
			indexed[k] = true
			if o, ok := owner[k]; !ok {
				index = append(index, fmt.Sprintf("index %s has %s, whose session is gone", ik, m))
			} else if o != uid {
				index = append(index, fmt.Sprintf("index %s has %s, owned by %s", ik, m, o))
			}
		}
	}
	owners := rdb.HGetAll(ctx, reapOwnersKey).Val()
	for k, o := range owner {
		if !indexed[k] {
			index = append(index, fmt.Sprintf("%s (owner %s) is not indexed", k, o))
		}
		if owners[k] != o {
			index = append(index, fmt.Sprintf("owner map has %q for %s, want %s", owners[k], k, o))
		}
	}
	for k := range owners {
		if _, ok := owner[k]; !ok {
			index = append(index, fmt.Sprintf("owner map has %s, whose session is gone", k))
		}
	}
	inLedger := map[string]bool{}
	for _, k := range rdb.ZRange(ctx, reapLedgerKey, 0, -1).Val() {
		inLedger[k] = true
		if !ttl[k] {
			ledger = append(ledger, fmt.Sprintf("ledger has %s, whose session is gone (or has no TTL)", k))
		}
	}
	for k := range owner {
		if ttl[k] && !inLedger[k] {
			ledger = append(ledger, fmt.Sprintf("%s has a TTL but no ledger entry", k))
		}
	}
	slices.Sort(index)
	slices.Sort(ledger)
	return index, ledger
}

// reapDangling counts index entries whose session is gone.
func reapDangling(t testing.TB, rdb *redis.Client) int {
	t.Helper()
	ctx := context.Background()
	n := 0
	for _, ik := range reapScan(t, rdb, "user:*") {
		for _, m := range rdb.SMembers(ctx, ik).Val() {
			if rdb.Exists(ctx, "session:"+m).Val() == 0 {
				n++
			}
		}
	}
	return n
}

func reapEvictedKeys(t testing.TB, rdb *redis.Client) int {
	t.Helper()
	info := rdb.Info(context.Background(), "stats").Val()
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "evicted_keys:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatal("INFO stats has no evicted_keys")
	return 0
}

// Acceptance 3: under a small maxmemory with allkeys-lru, evicted sessions leave the index; when
// Redis evicts the proxy's own bookkeeping, the reaper notices and repairs, after which index,
// owner map and ledger match the surviving sessions.
//
// 4mb, not 2mb: Redis 7.0 itself takes ~0.95MB and the node's ~15 connections (client buffers,
// ~0.25-0.4MB) plus the script cache bring used_memory to ~1.9MB before the first session, so
// under 2mb Redis soon has nothing left to evict and answers session writes with OOM.
func TestReapEvictions(t *testing.T) {
	up := redistest.Start(t, "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")
	rdb := reapClient(t, up.Addr())
	ctx := context.Background()
	node := reapStartNode(t, up.Addr(), true, nil)
	cl := reapClient(t, node.Addr)
	raw := reapDialRaw(t, node.Addr)
	if !reapEventually(5*time.Second, func() bool { return strings.Contains(reapNotifyFlags(rdb), "e") }) {
		t.Fatalf("notify-keyspace-events = %q: no evicted class", reapNotifyFlags(rdb))
	}
	rng := rand.New(rand.NewPCG(6, 6))
	payload := strings.Repeat("p", 1024)

	// 1. Sessions until Redis evicts, then as many again.
	var written []reapSession
	for round := 0; round < 40 && reapEvictedKeys(t, rdb) == 0; round++ {
		batch := reapSessions("ev"+strconv.Itoa(round)+"-", 100, 50, time.Hour, time.Hour, rng)
		if err := reapTryWrite(raw, batch, payload, 10); err != nil {
			t.Fatalf("write sessions: %v", err)
		}
		written = append(written, batch...)
	}
	if reapEvictedKeys(t, rdb) == 0 {
		t.Fatalf("no eviction after %d sessions of 1KB under maxmemory 4mb", len(written))
	}
	more := reapSessions("evmore-", len(written), 50, time.Hour, time.Hour, rng)
	if err := reapTryWrite(raw, more, payload, 10); err != nil {
		t.Fatalf("write sessions: %v", err)
	}
	written = append(written, more...)
	live := len(reapScan(t, rdb, "session:*"))
	t.Logf("wrote %d sessions, %d survive, evicted_keys %d", len(written), live, reapEvictedKeys(t, rdb))
	if live >= len(written) {
		t.Fatalf("no session was evicted (%d of %d live)", live, len(written))
	}
	var dangling int
	if !reapEventually(6*time.Second, func() bool { dangling = reapDangling(t, rdb); return dangling == 0 }) {
		t.Errorf("6s after the last write %d index entries still name evicted sessions", dangling)
	}

	// 2. Large non-session keys (at least 2MB of them, so the owner map, ledger and index keys,
	// untouched meanwhile, age and are evicted along with sessions) until Redis has evicted
	// bookkeeping and the reaper has repaired.
	big := strings.Repeat("f", 4<<10)
	fillers := 0
	for ; fillers < 3000 && (fillers < 500 || node.metric(reapMEvictedOwn) == 0 || node.metric(reapMRepairs) == 0); fillers += 10 {
		_, err := cl.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range 10 {
				p.Set(ctx, "filler:"+strconv.Itoa(fillers+i), big, 0)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("write filler keys: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("after %d filler keys of 4KB: evicted_bookkeeping %v, eviction_repairs %v, evicted_keys %d",
		fillers, node.metric(reapMEvictedOwn), node.metric(reapMRepairs), reapEvictedKeys(t, rdb))
	if !reapEventually(10*time.Second, func() bool { return node.metric(reapMEvictedOwn) > 0 }) {
		t.Fatal("evicted_bookkeeping_total stayed 0")
	}
	if !reapEventually(10*time.Second, func() bool { return node.metric(reapMRepairs) > 0 }) {
		t.Fatal("eviction_repairs_total stayed 0")
	}

	// 3. Writes stopped: after the repairs the index and owner map match the surviving sessions,
	// and so does the ledger (every session has a 1h TTL: exactly the live ones belong in it).
	var index, ledger []string
	if !reapEventually(10*time.Second, func() bool { index, _ = reapDrift(t, rdb); return len(index) == 0 }) {
		t.Errorf("10s after the last write the index/owner map differ from the %d surviving sessions in %d ways, e.g.:\n%s",
			len(reapScan(t, rdb, "session:*")), len(index), strings.Join(index[:min(len(index), 10)], "\n"))
	}
	if !reapEventually(2*time.Second, func() bool { _, ledger = reapDrift(t, rdb); return len(ledger) == 0 }) {
		t.Errorf("with the index repaired, the ledger still differs from the %d surviving sessions in %d ways "+
			"(sessions evicted while the owner map was missing keep their ledger entry for good), e.g.:\n%s",
			len(reapScan(t, rdb, "session:*")), len(ledger), strings.Join(ledger[:min(len(ledger), 10)], "\n"))
	}
	t.Logf("final: %d sessions live, evicted_bookkeeping %v, eviction_repairs %v, bookkeeping %+v",
		len(reapScan(t, rdb, "session:*")), node.metric(reapMEvictedOwn), node.metric(reapMRepairs), reapBookOf(t, rdb))
	reapLogLags(t, node)
}

// The reaper's bookkeeping key names used above are the schema's.
func TestReapKeyNames(t *testing.T) {
	sch, err := schema(conf.Default().Index)
	if err != nil {
		t.Fatal(err)
	}
	if sch.OwnersKey() != reapOwnersKey || sch.LedgerKey() != reapLedgerKey || sch.Prefix+"reaper-lease" != reapLeaseKey {
		t.Errorf("schema keys %q %q %q differ from the test's", sch.OwnersKey(), sch.LedgerKey(), sch.Prefix+"reaper-lease")
	}
}
