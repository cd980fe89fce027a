package reaper

// Shared helpers of the reaper's tests: real redis-server processes (internal/redistest), go-redis
// clients per DB, reapers with their own metrics registries, and sessions indexed the way the
// proxy would leave them (written straight to Redis, then reconciled by the Repairer).

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/promtest"
	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// reapDBs hands out one go-redis client per DB of one server, like cmd's upstreams.
type reapDBs struct {
	addr string
	mu   sync.Mutex
	byDB map[int]*redis.Client
}

func reapNewDBs(t testing.TB, addr string) *reapDBs {
	t.Helper()
	d := &reapDBs{addr: addr, byDB: map[int]*redis.Client{}}
	t.Cleanup(d.close)
	return d
}

func (d *reapDBs) db(n int) *redis.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.byDB[n]
	if c == nil {
		c = redis.NewClient(&redis.Options{Addr: d.addr, DB: n, Protocol: 2, PoolSize: 4,
			DialTimeout: time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
			DisableIdentity: true})
		d.byDB[n] = c
	}
	return c
}

// close closes every client: a reaper using them then fails like one whose process died.
func (d *reapDBs) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.byDB {
		_ = c.Close()
	}
}

// reapEnv is one redis-server plus the default schema and a client set for the test itself.
type reapEnv struct {
	t   testing.TB
	srv *redistest.Server
	sch *rewrite.Schema
	dbs *reapDBs // the test's own clients (setup and verification)
}

func reapStartEnv(t testing.TB, extra ...string) *reapEnv {
	t.Helper()
	sch, err := rewrite.NewSchema(rewrite.DefaultPrefix, []rewrite.Rule{rewrite.DefaultRule()})
	if err != nil {
		t.Fatal(err)
	}
	srv := redistest.Start(t, extra...)
	return &reapEnv{t: t, srv: srv, sch: sch, dbs: reapNewDBs(t, srv.Addr())}
}

func (e *reapEnv) rdb() *redis.Client { return e.dbs.db(0) }

// newReaper builds a reaper with its own clients and registry; tweak adjusts the options.
func (e *reapEnv) newReaper(tweak func(*Options)) (*Reaper, *reapDBs, *prometheus.Registry) {
	e.t.Helper()
	dbs := reapNewDBs(e.t, e.srv.Addr())
	reg := prometheus.NewRegistry()
	o := Options{Schema: e.sch, DB: dbs.db, Interval: 100 * time.Millisecond, Registerer: reg}
	if tweak != nil {
		tweak(&o)
	}
	r, err := New(o)
	if err != nil {
		e.t.Fatalf("reaper.New: %v", err)
	}
	return r, dbs, reg
}

// reapRun runs r until the returned stop is called (or the test ends); stop waits for Run.
func reapRun(t testing.TB, r *Reaper) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("reaper Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("reaper Run did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// addSessions writes session:<prefix><i> hashes owned by user <i%users> straight to Redis with
// a TTL (0: none); index indexes them.
func (e *reapEnv) addSessions(prefix string, n, users int, ttl time.Duration) []string {
	e.t.Helper()
	ctx := context.Background()
	keys := make([]string, n)
	_, err := e.rdb().Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			keys[i] = "session:" + prefix + strconv.Itoa(i)
			p.HSet(ctx, keys[i], "userid", "u"+strconv.Itoa(i%users), "data", "x")
			if ttl > 0 {
				p.PExpire(ctx, keys[i], ttl)
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("write sessions: %v", err)
	}
	return keys
}

// index runs the repair with fix=true: what SESSIONS.REINDEX does, and what the proxy's apply
// script would have left behind for these keys (owner map, index, ledger from PEXPIRETIME).
func (e *reapEnv) index() rewrite.Report {
	e.t.Helper()
	rep, err := NewRepairer(e.sch, 0).Run(context.Background(), e.rdb(), 0, true)
	if err != nil {
		e.t.Fatalf("repair: %v", err)
	}
	return rep
}

// reapBook is the bookkeeping of DB 0: index entries, owner-map entries, ledger entries.
type reapBook struct{ index, owners, ledger int64 }

func (e *reapEnv) book() reapBook {
	e.t.Helper()
	ctx := context.Background()
	c := e.rdb()
	var b reapBook
	var cursor uint64
	for range 10000 {
		keys, next, err := c.Scan(ctx, cursor, "user:*", 1000).Result()
		if err != nil {
			e.t.Fatalf("scan: %v", err)
		}
		for _, k := range keys {
			b.index += c.SCard(ctx, k).Val()
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	b.owners = c.HLen(ctx, e.sch.OwnersKey()).Val()
	b.ledger = c.ZCard(ctx, e.sch.LedgerKey()).Val()
	return b
}

// reapMetric sums the samples of one metric family whose labels include want ("k=v" pairs);
// for a histogram it sums the sample counts.
func reapMetric(t testing.TB, reg *prometheus.Registry, name string, want ...string) float64 {
	t.Helper()
	v, _, err := promtest.Sum(reg, name, want...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// settled waits until exactly one of two running reapers leads, holding the lease key, and
// returns it: the first to start may lead alone for a moment before it sees the other.
func (e *reapEnv) settled(timeout time.Duration, a, b *Reaper) *Reaper {
	e.t.Helper()
	var holder *Reaper
	ok := reapEventually(timeout, func() bool {
		holder = nil
		switch e.rdb().Get(context.Background(), a.leaseKey()).Val() {
		case a.token:
			holder = a
		case b.token:
			holder = b
		}
		return holder != nil && a.Leading() != b.Leading() && holder.Leading()
	})
	if !ok {
		e.t.Fatalf("no single lease holder after %v: A leads %v, B leads %v, lease %q", timeout,
			a.Leading(), b.Leading(), e.rdb().Get(context.Background(), a.leaseKey()).Val())
	}
	return holder
}

// changes is Redis' count of dataset changes since the last save: every write moves it.
func (e *reapEnv) changes() int64 {
	e.t.Helper()
	info := e.rdb().Info(context.Background(), "persistence").Val()
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "rdb_changes_since_last_save:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				e.t.Fatal(err)
			}
			return n
		}
	}
	e.t.Fatalf("no rdb_changes_since_last_save in INFO persistence:\n%s", info)
	return 0
}

// reapTracker is a raw RESP3 connection straight to Redis with CLIENT TRACKING on BCAST: Redis
// pushes an invalidation to it for every key anyone changes.
type reapTracker struct {
	t testing.TB
	c net.Conn
}

func reapTrack(t testing.TB, addr string) *reapTracker {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write([]byte("HELLO 3\r\nCLIENT TRACKING on BCAST\r\n")); err != nil {
		t.Fatal(err)
	}
	// HELLO's map has no "+OK" line; TRACKING answers +OK.
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.HasSuffix(got, []byte("+OK\r\n")) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("tracking setup: %v (read %q)", err, got)
		}
		got = append(got, buf[:n]...)
	}
	return &reapTracker{t: t, c: c}
}

// pushes returns what Redis sent since the last call, waiting 200ms for it to arrive.
func (tr *reapTracker) pushes() string {
	tr.t.Helper()
	_ = tr.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := tr.c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				tr.t.Fatalf("tracking connection: %v", err)
			}
			return string(got)
		}
	}
}

// reapEventually polls cond every 20ms until it holds or timeout passes.
func reapEventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
