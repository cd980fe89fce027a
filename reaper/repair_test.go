package reaper

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// TestReapRepairCounts runs check and then fix over a crafted, drifted DB and checks every count.
func TestReapRepairCounts(t *testing.T) {
	e := reapStartEnv(t)
	ctx := context.Background()
	c := e.rdb()
	// 10 sessions indexed properly (2 of them with a TTL).
	e.addSessions("good-", 8, 4, 0)
	e.addSessions("goodttl-", 2, 2, time.Hour)
	if rep := e.index(); rep.Scanned != 10 || rep.Fixed != 10 {
		t.Fatalf("initial index: %+v, want scanned=10 fixed=10", rep)
	}
	// Drift made behind the proxy's back:
	e.addSessions("missing-", 4, 2, 0) // 4 sessions nobody indexed
	for _, g := range []string{"ghost1", "ghost2", "ghost3"} {
		c.SAdd(ctx, "user:u9", g) // 3 index entries whose session is gone
	}
	for _, s := range []string{"moved1", "moved2"} { // 2 sessions indexed under the wrong user
		c.HSet(ctx, "session:"+s, "userid", "u1")
		c.SAdd(ctx, "user:u7", s)
	}
	c.HSet(ctx, "session:noowner", "data", "x")   // a session without owner: not indexable
	c.Set(ctx, "session:string", "not a hash", 0) // a session key of another type
	c.Set(ctx, "other:1", "not a session", 0)     // not a session key at all
	c.HSet(ctx, "sessionless", "userid", "u1")    // matches no rule
	c.SAdd(ctx, "user:u0", "good-0", "good-4")    // already there: no drift
	// An owner-map entry (with a ledger entry) of a session that is gone.
	c.HSet(ctx, e.sch.OwnersKey(), "session:orphan", "u3")
	c.ZAdd(ctx, e.sch.LedgerKey(), redis.Z{Score: 1, Member: "session:orphan"})
	c.HSet(ctx, e.sch.OwnersKey(), "session:good-0", "u0")
	// Two sessions with a TTL whose deadline the ledger lost or has wrong: missing bookkeeping,
	// repaired by the fix (which counts index changes only).
	c.ZRem(ctx, e.sch.LedgerKey(), "session:goodttl-0")
	c.ZAdd(ctx, e.sch.LedgerKey(), redis.Z{Score: 2, Member: "session:goodttl-1"})

	rp := NewRepairer(e.sch, 3) // tiny batches: every step spans several scripts
	for _, tc := range []struct {
		name string
		fix  bool
		want rewrite.Report
	}{
		// scanned: 10 good + 4 missing + 2 moved + noowner + string; missing: also 2 deadlines
		// orphans: session:orphan's owner-map entry and its ledger entry
		{"check", false, rewrite.Report{Rule: "session", Scanned: 18, Missing: 8, Stale: 5, Orphans: 2}},
		// fix: 4 added, 2 moved (one change each), then 3 ghosts and 2 wrong-user entries pruned;
		// what was wrong is reported as the check found it, before the fix
		{"fix", true, rewrite.Report{Rule: "session", Scanned: 18, Missing: 8, Stale: 5, Orphans: 2, Fixed: 11}},
		{"check after fix", false, rewrite.Report{Rule: "session", Scanned: 18}},
		{"fix is idempotent", true, rewrite.Report{Rule: "session", Scanned: 18}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := rp.Run(ctx, c, 0, tc.fix)
			if err != nil {
				t.Fatal(err)
			}
			rep.Duration = 0
			if rep != tc.want {
				t.Errorf("got  %+v\nwant %+v", rep, tc.want)
			}
		})
	}
	// The result is the index the sessions call for.
	if got := c.SMembers(ctx, "user:u1").Val(); !slices.Contains(got, "moved1") || !slices.Contains(got, "moved2") {
		t.Errorf("user:u1 = %v, want moved1 and moved2 in it", got)
	}
	for _, k := range []string{"user:u7", "user:u9"} {
		if n := c.Exists(ctx, k).Val(); n != 0 {
			t.Errorf("%s still exists: %v", k, c.SMembers(ctx, k).Val())
		}
	}
	if b := e.book(); b.index != 16 || b.owners != 16 || b.ledger != 2 {
		t.Errorf("bookkeeping %+v, want 16 index entries, 16 owners, 2 ledger entries", b)
	}
	if got, want := c.ZScore(ctx, e.sch.LedgerKey(), "session:goodttl-1").Val(), float64(c.PExpireTime(ctx, "session:goodttl-1").Val().Milliseconds()); got != want {
		t.Errorf("ledger score of session:goodttl-1 = %v after the fix, want its deadline %v", got, want)
	}
}

// TestReapRepairZSetDeadlines: under the zset layout an entry's score is its session's
// deadline (+inf without one); a score that no longer matches (a TTL changed behind the
// proxy's back) is reported missing and repaired.
func TestReapRepairZSetDeadlines(t *testing.T) {
	sch, err := rewrite.NewSchema(rewrite.DefaultPrefix, []rewrite.Rule{
		{Name: "z", Pattern: "zs:*", Field: "uid", Layout: rewrite.LayoutZSet, IndexKey: "zuser:{uid}"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := redistest.Start(t)
	ctx := context.Background()
	c := reapNewDBs(t, srv.Addr()).db(0)
	rp := NewRepairer(sch, 0)
	run := func(fix bool) rewrite.Report {
		t.Helper()
		rep, err := rp.Run(ctx, c, 0, fix)
		if err != nil {
			t.Fatal(err)
		}
		rep.Duration = 0
		return rep
	}
	c.HSet(ctx, "zs:a", "uid", "1")
	c.PExpire(ctx, "zs:a", 500*time.Second)
	c.HSet(ctx, "zs:b", "uid", "1")
	run(true)
	score := func(m string) float64 { return c.ZScore(ctx, "zuser:1", m).Val() }
	if got, want := score("a"), float64(c.PExpireTime(ctx, "zs:a").Val().Milliseconds()); got != want {
		t.Fatalf("indexed score of zs:a = %v, want its deadline %v", got, want)
	}
	c.PExpire(ctx, "zs:a", 900*time.Second) // behind the proxy's back
	c.PExpire(ctx, "zs:b", 900*time.Second)
	if rep := run(false); rep.Missing != 2 {
		t.Errorf("check after two TTL changes: %+v, want missing 2", rep)
	}
	run(true)
	if rep := run(false); rep != (rewrite.Report{Rule: "z", Scanned: 2}) {
		t.Errorf("check after the fix: %+v, want no drift", rep)
	}
	if got, want := score("b"), float64(c.PExpireTime(ctx, "zs:b").Val().Milliseconds()); got != want {
		t.Errorf("score of zs:b = %v after the fix, want its deadline %v", got, want)
	}
	c.Persist(ctx, "zs:a")
	if rep := run(false); rep.Missing != 1 {
		t.Errorf("check after PERSIST: %+v, want missing 1 (score not +inf)", rep)
	}
	run(true)
	if got := score("a"); !math.IsInf(got, 1) {
		t.Errorf("score of zs:a = %v after PERSIST and the fix, want +inf", got)
	}
}

// TestReapLedgerEntryWithoutOwner: the owner map is lost (Redis evicted it under an allkeys-*
// policy, or it was deleted) and then a session with a TTL goes away. Its index entry is
// repaired, and its ledger entry must go too: left there, every sweep would find it due again
// and count it as one more cleanup, forever.
func TestReapLedgerEntryWithoutOwner(t *testing.T) {
	e := reapStartEnv(t)
	ctx := context.Background()
	c := e.rdb()
	keys := e.addSessions("lost-", 5, 1, time.Hour)
	e.index()
	c.Del(ctx, e.sch.OwnersKey()) // what an eviction of the owner map does
	c.Del(ctx, keys...)           // the sessions go (evicted or expired) before a repair

	t.Run("repair", func(t *testing.T) {
		e.index() // what the reaper runs after the eviction event of the owner map
		if b := e.book(); b != (reapBook{}) {
			t.Errorf("after the repair: %+v, want no index, owner or ledger entry (ledger: %v)",
				b, c.ZRange(ctx, e.sch.LedgerKey(), 0, -1).Val())
		}
	})
	t.Run("sweep", func(t *testing.T) {
		r, _, reg := e.newReaper(func(o *Options) { o.Now = func() time.Time { return time.Now().Add(2 * time.Hour) } })
		r.dbs = 1
		for range 3 {
			r.tick(ctx)
		}
		if err := c.ZScore(ctx, e.sch.LedgerKey(), keys[0]).Err(); err != redis.Nil {
			t.Errorf("ledger entry of the gone session %s survived 3 sweeps (err %v)", keys[0], err)
		}
		if got := reapMetric(t, reg, "sessionproxy_reaper_cleanups_total"); got > float64(len(keys)) {
			t.Errorf("3 sweeps counted %v cleanups for %d sessions: the same entries are counted again each sweep", got, len(keys))
		}
	})
}
