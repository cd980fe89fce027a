package reaper

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestReapMissingFlags(t *testing.T) {
	for _, tc := range []struct{ name, flags, want string }{
		{"empty", "", "Exe"},
		{"keyevent only", "E", "xe"},
		{"keyspace only", "K", "Exe"},
		{"expired set", "xE", "e"},
		{"evicted set", "eE", "x"},
		{"all three, Redis order", "xeE", ""},
		{"all three, given order", "Exe", ""},
		{"all classes with keyevent", "AE", ""},
		{"all classes, Redis order", "AKE", ""},
		{"all classes without keyevent", "KA", "E"},
		{"other classes only", "g$lshzt", "Exe"},
		{"keyspace and expired", "Kx", "Ee"},
		{"new-key and miss classes", "nmE", "xe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := missingFlags(tc.flags); got != tc.want {
				t.Errorf("missingFlags(%q) = %q, want %q", tc.flags, got, tc.want)
			}
		})
	}
}

// TestReapMissingFlagsAccepted: what ensureNotifications writes (current + missing) is accepted
// by Redis and enables every class the reaper needs, keeping the classes already set.
func TestReapMissingFlagsAccepted(t *testing.T) {
	e := reapStartEnv(t)
	ctx := context.Background()
	c := e.rdb()
	for _, start := range []string{"", "E", "K", "Kg", "KA", "xE", "g$lshzt", "nm"} {
		t.Run("from "+start, func(t *testing.T) {
			if err := c.ConfigSet(ctx, "notify-keyspace-events", start).Err(); err != nil {
				t.Fatal(err)
			}
			cur := c.ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]
			if err := c.ConfigSet(ctx, "notify-keyspace-events", cur+missingFlags(cur)).Err(); err != nil {
				t.Fatalf("CONFIG SET %q: %v", cur+missingFlags(cur), err)
			}
			after := c.ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]
			if m := missingFlags(after); m != "" {
				t.Errorf("after setting, %q still misses %q", after, m)
			}
			for _, cl := range cur {
				if !strings.ContainsRune(after, cl) && !strings.Contains(after, "A") {
					t.Errorf("class %q of %q lost: now %q", cl, cur, after)
				}
			}
		})
	}
}

// TestReapLeaseOneLeader: of two reapers on one Redis exactly one holds the lease; renewal keeps
// it; a release hands it over at once; a holder that dies without releasing is replaced only
// once its lease has expired.
func TestReapLeaseOneLeader(t *testing.T) {
	e := reapStartEnv(t)
	ctx := context.Background()
	a, _, _ := e.newReaper(nil)
	b, _, _ := e.newReaper(nil)
	if a.token == b.token {
		t.Fatalf("two reapers share the token %q", a.token)
	}
	holder := func() string { return e.rdb().Get(ctx, a.leaseKey()).Val() }

	// 1. A takes the free lease, B stands by, renewals keep it with A.
	for i := range 3 {
		if !a.holdLease(ctx) {
			t.Fatalf("round %d: A does not hold the lease (holder %q)", i, holder())
		}
		if b.holdLease(ctx) {
			t.Fatalf("round %d: B holds the lease too", i)
		}
		if a.leader.Load() == b.leader.Load() {
			t.Fatalf("round %d: leader flags A=%v B=%v", i, a.leader.Load(), b.leader.Load())
		}
	}
	if got := holder(); got != a.token {
		t.Fatalf("lease value %q, want A's token %q", got, a.token)
	}
	if pttl := e.rdb().PTTL(ctx, a.leaseKey()).Val(); pttl <= 0 || pttl > time.Duration(a.lease())*time.Millisecond {
		t.Fatalf("lease PTTL %v, want in (0, %dms]", pttl, a.lease())
	}

	// 2. A releases (shutdown): B takes over on its next attempt; A cannot renew B's lease.
	a.release()
	if !b.holdLease(ctx) {
		t.Fatalf("B did not take the released lease (holder %q)", holder())
	}
	if a.holdLease(ctx) {
		t.Fatal("A renewed a lease B holds")
	}

	// 3. B dies (stops renewing, no release): A gets the lease once it expires, not before.
	start := time.Now()
	took := time.Duration(-1)
	for time.Since(start) < time.Duration(b.lease())*time.Millisecond+3*time.Second {
		if a.holdLease(ctx) {
			took = time.Since(start)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	lease := time.Duration(b.lease()) * time.Millisecond
	switch {
	case took < 0:
		t.Fatalf("A did not take over within %v of B's death", lease+3*time.Second)
	case took < lease-500*time.Millisecond:
		t.Fatalf("A took over after %v, before B's %v lease could expire", took, lease)
	}
	t.Logf("takeover after holder death: %v (lease %v)", took.Round(time.Millisecond), lease)
}

// TestReapRunOneLeader: two running reapers settle on one leader, the lease key's holder (the
// first may lead alone for a tick before it sees the second); then they never both lead and the
// standby sweeps nothing.
func TestReapRunOneLeader(t *testing.T) {
	e := reapStartEnv(t)
	ctx := context.Background()
	a, _, regA := e.newReaper(nil)
	b, _, regB := e.newReaper(nil)
	reapRun(t, a)
	reapRun(t, b)
	e.settled(5*time.Second, a, b)
	keys := e.addSessions("one-", 200, 10, time.Second)
	e.index()
	for i := range 20 { // ~1s of samples
		if a.leader.Load() == b.leader.Load() {
			t.Fatalf("sample %d: leader flags A=%v B=%v", i, a.leader.Load(), b.leader.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !reapEventually(5*time.Second, func() bool { return e.book() == reapBook{} }) {
		t.Fatalf("bookkeeping left after the sessions expired: %+v", e.book())
	}
	ca := reapMetric(t, regA, "sessionproxy_reaper_cleanups_total")
	cb := reapMetric(t, regB, "sessionproxy_reaper_cleanups_total")
	leader, standby := ca, cb
	if b.leader.Load() {
		leader, standby = cb, ca
	}
	if leader != float64(len(keys)) || standby != 0 {
		t.Errorf("cleanups: leader %v, standby %v; want %d and 0", leader, standby, len(keys))
	}
	if got := e.rdb().Get(ctx, a.leaseKey()).Val(); got != a.token && got != b.token {
		t.Errorf("lease value %q is neither reaper's token", got)
	}
}

// TestReapAloneWritesNothing: a reaper alone on its Redis leads without writing: no lease key,
// no change to the dataset (rdb_changes_since_last_save), no invalidation for a client tracking
// every key, and no pattern subscription (issue 11, items 7 and 8).
func TestReapAloneWritesNothing(t *testing.T) {
	for _, notifications := range []bool{true, false} {
		t.Run("notifications="+strconv.FormatBool(notifications), func(t *testing.T) {
			e := reapStartEnv(t)
			ctx := context.Background()
			tr := reapTrack(t, e.srv.Addr())
			dirty := e.changes()
			r, _, _ := e.newReaper(func(o *Options) {
				o.Notifications = notifications
				o.Interval = time.Second
			})
			reapRun(t, r)
			if !reapEventually(2*time.Second, r.Leading) {
				t.Fatal("the reaper alone does not lead after 2s")
			}
			time.Sleep(2500 * time.Millisecond) // two more decisions, at least
			if !r.Leading() {
				t.Error("the reaper alone stopped leading")
			}
			if n := e.rdb().Exists(ctx, r.leaseKey()).Val(); n != 0 {
				t.Errorf("the lease key exists with a single reaper (value %q)", e.rdb().Get(ctx, r.leaseKey()).Val())
			}
			if got := e.changes() - dirty; got != 0 {
				t.Errorf("rdb_changes_since_last_save grew by %d while the reaper ran alone, want 0", got)
			}
			if n := e.rdb().PubSubNumPat(ctx).Val(); n != 0 {
				t.Errorf("PUBSUB NUMPAT = %d, want 0", n)
			}
			chans := e.rdb().PubSubChannels(ctx, "*").Val()
			want := 1 // the presence channel
			if notifications {
				want += 2 * 16
			}
			if len(chans) != want || !slices.Contains(chans, r.presenceChannel()) {
				t.Errorf("PUBSUB CHANNELS lists %d channels, want %d with %q: %v", len(chans), want, r.presenceChannel(), chans)
			}
			if got := tr.pushes(); strings.Contains(got, "invalidate") {
				t.Errorf("a client tracking every key got invalidations while only the reaper ran: %q", got)
			}
			e.rdb().Set(ctx, "probe", "1", 0) // the tracking client does see writes
			if got := tr.pushes(); !strings.Contains(got, "probe") {
				t.Errorf("tracking client got %q for a SET of probe, want an invalidation", got)
			}
		})
	}
}

// TestReapPresenceTakeover: two reapers settle on the lease key's holder. When it stops
// (release), crashes (connections gone, nothing released) or hangs (still connected, so still
// present, but no longer renewing), the other leads: at once in the first two cases, alone and
// without writing the key again; only once the lease has expired in the third.
func TestReapPresenceTakeover(t *testing.T) {
	for _, tc := range []struct {
		name          string
		notifications bool
		end           string // stop, crash, hang
	}{
		{"stop", true, "stop"},
		{"stop, notifications off", false, "stop"},
		{"crash", true, "crash"},
		{"hang", true, "hang"},
		{"hang, notifications off", false, "hang"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := reapStartEnv(t)
			ctx := context.Background()
			tweak := func(o *Options) { o.Notifications = tc.notifications }
			a, dbsA, _ := e.newReaper(tweak)
			b, dbsB, _ := e.newReaper(tweak)
			stops := map[*Reaper]func(){a: reapRun(t, a), b: reapRun(t, b)}
			clients := map[*Reaper]*reapDBs{a: dbsA, b: dbsB}
			holder := e.settled(5*time.Second, a, b)
			other := a
			if holder == a {
				other = b
			}
			for i := range 10 {
				if !holder.Leading() || other.Leading() {
					t.Fatalf("sample %d: holder leads %v, other leads %v", i, holder.Leading(), other.Leading())
				}
				time.Sleep(50 * time.Millisecond)
			}
			lease := time.Duration(holder.lease()) * time.Millisecond
			ended := time.Now()
			switch tc.end {
			case "stop":
				stops[holder]()
			case "crash":
				clients[holder].close()
				stops[holder]()
			case "hang":
				// Something keeps the holder's presence channel subscribed, as a hung process's
				// open connection would.
				ps := e.rdb().Subscribe(ctx, holder.presenceChannel())
				t.Cleanup(func() { _ = ps.Close() })
				if _, err := ps.Receive(ctx); err != nil {
					t.Fatal(err)
				}
				clients[holder].close()
				stops[holder]()
			}
			if !reapEventually(lease+3*time.Second, other.Leading) {
				t.Fatalf("the other reaper does not lead %v after the holder's end", lease+3*time.Second)
			}
			took := time.Since(ended)
			t.Logf("takeover after %s: %v (lease %v)", tc.end, took.Round(time.Millisecond), lease)
			if tc.end == "hang" {
				if took < lease-500*time.Millisecond {
					t.Errorf("took over after %v, before the hung holder's %v lease could expire", took, lease)
				}
				if v := e.rdb().Get(ctx, other.leaseKey()).Val(); v != other.token {
					t.Errorf("lease value %q, want the new holder's %q", v, other.token)
				}
				return
			}
			if took > 2*time.Second {
				t.Errorf("took over after %v; the holder's presence channel was gone at once", took)
			}
			// Alone now: once a crashed holder's lease has lapsed the key is gone for good.
			if !reapEventually(lease+time.Second, func() bool { return e.rdb().Exists(ctx, other.leaseKey()).Val() == 0 }) {
				t.Fatalf("the lease key (value %q) outlived the holder's lease", e.rdb().Get(ctx, other.leaseKey()).Val())
			}
			for range 10 {
				time.Sleep(100 * time.Millisecond)
				if e.rdb().Exists(ctx, other.leaseKey()).Val() != 0 || !other.Leading() {
					t.Fatalf("the reaper left alone wrote the lease key (%v) or stopped leading (%v)",
						e.rdb().Get(ctx, other.leaseKey()).Val(), other.Leading())
				}
			}
		})
	}
}

// TestReapGlobEscape: the presence pattern takes any prefix literally.
func TestReapGlobEscape(t *testing.T) {
	for in, want := range map[string]string{
		"sessionproxy:": "sessionproxy:",
		"a*b?c[d]e\\f":  "a\\*b\\?c\\[d\\]e\\\\f",
		"":              "",
	} {
		if got := globEscape(in); got != want {
			t.Errorf("globEscape(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestReapSweepRescoresExtendedTTL: a due ledger entry whose session still exists (TTL extended
// straight on Redis) is re-scored to the new deadline and stays indexed; one whose TTL was
// removed leaves the ledger but stays indexed. The sweep runs with a clock 2s ahead, so no
// waiting is needed.
func TestReapSweepRescoresExtendedTTL(t *testing.T) {
	e := reapStartEnv(t)
	ctx := context.Background()
	c := e.rdb()
	keys := e.addSessions("ext-", 3, 3, time.Second)
	e.index()
	old := c.ZScore(ctx, e.sch.LedgerKey(), keys[0]).Val()
	c.Expire(ctx, keys[0], time.Minute) // extended behind the proxy
	c.Persist(ctx, keys[1])             // TTL removed behind the proxy
	// keys[2] keeps its 1s TTL: it is due for the skewed clock too, but still exists.
	r, _, reg := e.newReaper(func(o *Options) { o.Now = func() time.Time { return time.Now().Add(2 * time.Second) } })
	r.dbs = 1
	r.tick(ctx)
	if !r.leader.Load() {
		t.Fatal("reaper did not take the free lease")
	}
	for i, k := range keys {
		if !c.SIsMember(ctx, "user:u"+strconv.Itoa(i), strings.TrimPrefix(k, "session:")).Val() {
			t.Errorf("%s left the index", k)
		}
		if c.HGet(ctx, e.sch.OwnersKey(), k).Val() == "" {
			t.Errorf("%s left the owner map", k)
		}
	}
	if got, want := c.ZScore(ctx, e.sch.LedgerKey(), keys[0]).Val(), float64(c.PExpireTime(ctx, keys[0]).Val().Milliseconds()); got != want || got <= old {
		t.Errorf("extended session's ledger score %v (was %v), want its new deadline %v", got, old, want)
	}
	if err := c.ZScore(ctx, e.sch.LedgerKey(), keys[1]).Err(); err != redis.Nil {
		t.Errorf("persisted session still in the ledger (err %v)", err)
	}
	if got := reapMetric(t, reg, "sessionproxy_reaper_stale_entries_total"); got != 3 {
		t.Errorf("stale_entries_total = %v, want 3", got)
	}
	if got := reapMetric(t, reg, "sessionproxy_reaper_cleanups_total"); got != 0 {
		t.Errorf("cleanups_total = %v, want 0 (every session still exists)", got)
	}
}

// TestReapSweepDrainsBacklog: one tick drains a backlog many batches long (sessions deleted
// while nobody listened), counting each cleanup once.
func TestReapSweepDrainsBacklog(t *testing.T) {
	e := reapStartEnv(t)
	ctx := context.Background()
	keys := e.addSessions("bl-", 1000, 50, time.Hour)
	e.index()
	if err := e.rdb().Del(ctx, keys...).Err(); err != nil { // gone behind the proxy's back
		t.Fatal(err)
	}
	r, _, reg := e.newReaper(func(o *Options) {
		o.Batch = 64
		o.Interval = 5 * time.Second // one tick may work this long
		o.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	})
	r.dbs = r.databases(ctx)
	if r.dbs != 16 {
		t.Errorf("databases = %d, want 16", r.dbs)
	}
	r.tick(ctx)
	if b := e.book(); b != (reapBook{}) {
		t.Errorf("bookkeeping left after one tick: %+v", b)
	}
	if got := reapMetric(t, reg, "sessionproxy_reaper_cleanups_total", "path=sweep"); got != 1000 {
		t.Errorf("sweep cleanups = %v, want 1000", got)
	}
	if got := reapMetric(t, reg, "sessionproxy_reaper_ledger_entries", "db=0"); got != 0 {
		t.Errorf("ledger_entries{db=0} = %v, want 0", got)
	}
}

// TestReapNotificationsConfig: with Notifications the reaper adds E, x and e to
// notify-keyspace-events and keeps what was there; without, it leaves the setting alone.
func TestReapNotificationsConfig(t *testing.T) {
	ctx := context.Background()
	t.Run("on", func(t *testing.T) {
		e := reapStartEnv(t, "--notify-keyspace-events", "Kg")
		r, _, reg := e.newReaper(func(o *Options) { o.Notifications = true })
		reapRun(t, r)
		var flags string
		ok := reapEventually(5*time.Second, func() bool {
			flags = e.rdb().ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]
			return missingFlags(flags) == ""
		})
		if !ok {
			t.Fatalf("notify-keyspace-events = %q after 5s", flags)
		}
		if !strings.Contains(flags, "K") || !strings.Contains(flags, "g") {
			t.Errorf("notify-keyspace-events = %q: the K and g classes set before were dropped", flags)
		}
		if got := reapMetric(t, reg, "sessionproxy_reaper_config_refused_total"); got != 0 {
			t.Errorf("config_refused_total = %v", got)
		}
	})
	t.Run("changed behind", func(t *testing.T) {
		// An admin (or an app) takes the keyevents away after the reaper set them: noticed
		// within notifyCheckEvery intervals (the gauge goes to 0), not set back, and expired
		// sessions still leave the index through the sweep.
		e := reapStartEnv(t)
		r, _, reg := e.newReaper(func(o *Options) { o.Notifications = true })
		reapRun(t, r)
		if !reapEventually(5*time.Second, func() bool { return reapMetric(t, reg, "sessionproxy_reaper_notifications") == 1 }) {
			t.Fatal("notifications gauge not 1 after the reaper enabled them")
		}
		if err := e.rdb().ConfigSet(ctx, "notify-keyspace-events", "Kg").Err(); err != nil {
			t.Fatal(err)
		}
		if !reapEventually(5*time.Second, func() bool { return reapMetric(t, reg, "sessionproxy_reaper_notifications") == 0 }) {
			t.Fatal("the reaper did not notice the keyevents were taken away")
		}
		e.addSessions("gone-", 20, 4, 200*time.Millisecond)
		e.index()
		if !reapEventually(5*time.Second, func() bool { return e.book() == reapBook{} }) {
			t.Errorf("the sweep did not clean up: %+v", e.book())
		}
		if flags := e.rdb().ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]; flags != "gK" && flags != "Kg" {
			t.Errorf("notify-keyspace-events = %q: the reaper set it back", flags)
		}
		if err := e.rdb().ConfigSet(ctx, "notify-keyspace-events", "Exe").Err(); err != nil {
			t.Fatal(err)
		}
		if !reapEventually(5*time.Second, func() bool { return reapMetric(t, reg, "sessionproxy_reaper_notifications") == 1 }) {
			t.Error("the gauge did not come back once the keyevents were on again")
		}
	})
	t.Run("off", func(t *testing.T) {
		e := reapStartEnv(t)
		r, _, _ := e.newReaper(nil)
		reapRun(t, r)
		reapEventually(time.Second, func() bool { return r.leader.Load() })
		time.Sleep(300 * time.Millisecond)
		if flags := e.rdb().ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]; flags != "" {
			t.Errorf("notify-keyspace-events = %q, want it untouched (\"\")", flags)
		}
	})
	t.Run("refused", func(t *testing.T) {
		// CONFIG renamed away, as on managed Redis: counted, and the sweep still cleans.
		e := reapStartEnv(t, "--rename-command", "CONFIG", "")
		r, _, reg := e.newReaper(func(o *Options) { o.Notifications = true })
		e.addSessions("ref-", 20, 4, 200*time.Millisecond)
		e.index()
		reapRun(t, r)
		if !reapEventually(5*time.Second, func() bool {
			return reapMetric(t, reg, "sessionproxy_reaper_config_refused_total") > 0
		}) {
			t.Error("config_refused_total stayed 0 with CONFIG disabled")
		}
		if got := reapMetric(t, reg, "sessionproxy_reaper_notifications"); got != -1 {
			t.Errorf("notifications gauge = %v with CONFIG refused, want -1 (cannot tell)", got)
		}
		if !reapEventually(5*time.Second, func() bool { return e.book() == reapBook{} }) {
			t.Errorf("sweep alone did not clean up: %+v", e.book())
		}
	})
}

// TestReapRunEndsSubscription: the reaper subscribes to exact keyevent channels, one pair per
// DB, and no pattern (PUBSUB NUMPAT stays what apps expect); when Run returns, the reaper is
// stopped: its subscription is gone too (Redis no longer sends it every expiry), and no event
// goroutine is left acting for it.
func TestReapRunEndsSubscription(t *testing.T) {
	e := reapStartEnv(t)
	ctx := context.Background()
	r, _, _ := e.newReaper(func(o *Options) { o.Notifications = true })
	stop := reapRun(t, r)
	chans := []string{"__keyevent@0__:expired", "__keyevent@0__:evicted", "__keyevent@15__:expired", "__keyevent@15__:evicted"}
	subscribers := func() (n int64) {
		for _, c := range e.rdb().PubSubNumSub(ctx, chans...).Val() {
			n += c
		}
		return n
	}
	if !reapEventually(5*time.Second, func() bool { return subscribers() == int64(len(chans)) }) {
		t.Fatalf("PUBSUB NUMSUB %v sums to %d, want one subscriber each", chans, subscribers())
	}
	if n := e.rdb().PubSubNumPat(ctx).Val(); n != 0 {
		t.Errorf("PUBSUB NUMPAT = %d with the reaper running, want 0", n)
	}
	stop() // Run has returned; the reaper's clients stay open (cmd closes them later)
	if !reapEventually(3*time.Second, func() bool { return subscribers() == 0 }) {
		t.Errorf("3s after Run returned, the keyevent channels have %d subscribers: the stopped reaper is still subscribed", subscribers())
	}
}

// TestReapReconnectCountedOnce: one Redis restart is one re-established subscription, and the
// restarted Redis gets its notify-keyspace-events back.
func TestReapReconnectCountedOnce(t *testing.T) {
	e := reapStartEnv(t)
	ctx := context.Background()
	r, _, reg := e.newReaper(func(o *Options) { o.Notifications = true })
	reapRun(t, r)
	flags := func() string {
		return e.rdb().ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]
	}
	if !reapEventually(5*time.Second, func() bool { return missingFlags(flags()) == "" }) {
		t.Fatalf("notify-keyspace-events = %q", flags())
	}
	e.srv.Restart() // forgets the CONFIG SET
	if !reapEventually(10*time.Second, func() bool { return missingFlags(flags()) == "" }) {
		t.Fatalf("10s after a restart notify-keyspace-events = %q", flags())
	}
	time.Sleep(500 * time.Millisecond) // let any further subscription messages arrive
	if got := reapMetric(t, reg, "sessionproxy_reaper_subscription_reconnects_total"); got != 1 {
		t.Errorf("subscription_reconnects_total = %v after one Redis restart, want 1", got)
	}
}

// TestReapOtherDB: sessions in a DB other than 0 are cleaned by both paths (the event channel
// names the DB; the sweep visits every DB).
func TestReapOtherDB(t *testing.T) {
	for _, tc := range []struct {
		name          string
		notifications bool
		path          string
		interval      time.Duration
	}{
		// The event case sweeps only at start (empty ledger) and after 30 s, so the cleanup
		// it sees can only come from events; the sweep case has no events at all.
		{"event", true, "path=event", 30 * time.Second},
		{"sweep", false, "path=sweep", 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := reapStartEnv(t)
			ctx := context.Background()
			c := e.dbs.db(3)
			r, _, reg := e.newReaper(func(o *Options) {
				o.Notifications = tc.notifications
				o.Interval = tc.interval
			})
			reapRun(t, r)
			if tc.notifications && !reapEventually(5*time.Second, func() bool {
				return missingFlags(e.rdb().ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]) == ""
			}) {
				t.Fatal("notifications not enabled within 5s")
			}
			for i := range 20 {
				k := "session:db3-" + strconv.Itoa(i)
				c.HSet(ctx, k, "userid", "u"+strconv.Itoa(i%4))
				c.PExpire(ctx, k, 400*time.Millisecond)
			}
			if _, err := NewRepairer(e.sch, 0).Run(ctx, c, 0, true); err != nil {
				t.Fatal(err)
			}
			if n := c.ZCard(ctx, e.sch.LedgerKey()).Val(); n != 20 {
				t.Fatalf("DB 3 ledger has %d entries, want 20", n)
			}
			if !reapEventually(5*time.Second, func() bool {
				return c.ZCard(ctx, e.sch.LedgerKey()).Val() == 0 && c.HLen(ctx, e.sch.OwnersKey()).Val() == 0 &&
					c.Exists(ctx, "user:u0", "user:u1", "user:u2", "user:u3").Val() == 0
			}) {
				t.Fatalf("DB 3 bookkeeping left 5s later: ledger %d, owners %d", c.ZCard(ctx, e.sch.LedgerKey()).Val(), c.HLen(ctx, e.sch.OwnersKey()).Val())
			}
			if got := reapMetric(t, reg, "sessionproxy_reaper_cleanups_total", tc.path); got == 0 {
				t.Errorf("no cleanup on the %s path", tc.name)
			}
			if got := reapMetric(t, reg, "sessionproxy_reaper_cleanups_total"); got != 20 {
				t.Errorf("cleanups_total = %v, want 20", got)
			}
		})
	}
}

// TestReapSweepClockAhead: the sweep picks due entries by the proxy host's clock, Redis decides
// expiry by its own. With the proxy's clock ahead, entries due by the first but not yet expired
// by the second are re-scored to the same deadline; one sweep must still look at each of them
// once, not re-read the same batch until the interval is used up.
func TestReapSweepClockAhead(t *testing.T) {
	e := reapStartEnv(t)
	ctx := context.Background()
	e.addSessions("skew-", 300, 10, 10*time.Second)
	e.index()
	r, _, reg := e.newReaper(func(o *Options) {
		o.Batch = 100
		o.Interval = 500 * time.Millisecond
		o.Now = func() time.Time { return time.Now().Add(time.Minute) } // 1 min ahead of Redis
	})
	r.dbs = 1
	start := time.Now()
	r.tick(ctx)
	took := time.Since(start)
	stale := reapMetric(t, reg, "sessionproxy_reaper_stale_entries_total")
	if stale > 300 {
		t.Errorf("one sweep re-scored %v entries for 300 sessions in %v: it re-read the same unchanged entries until the interval ran out",
			stale, took.Round(time.Millisecond))
	}
	if b := e.book(); b != (reapBook{300, 300, 300}) {
		t.Errorf("bookkeeping %+v, want all 300 sessions kept", b)
	}
}

// TestReapSetTiming: a longer interval set on the leading reaper (a reload) renews its lease
// for the new length at once: the lease set for the old interval must not lapse and hand
// leadership to another reaper while the holder still leads.
func TestReapSetTiming(t *testing.T) {
	e := reapStartEnv(t)
	a, _, _ := e.newReaper(func(o *Options) { o.Interval = 200 * time.Millisecond })
	b, _, _ := e.newReaper(func(o *Options) { o.Interval = 200 * time.Millisecond })
	reapRun(t, a)
	reapRun(t, b)
	h := e.settled(10*time.Second, a, b)
	other := a
	if h == a {
		other = b
	}
	h.SetTiming(10*time.Second, 64)
	for start := time.Now(); time.Since(start) < 4*time.Second; time.Sleep(20 * time.Millisecond) {
		if h.Leading() && other.Leading() {
			t.Fatalf("two leaders %v after SetTiming", time.Since(start))
		}
		if e.rdb().Get(context.Background(), a.leaseKey()).Val() == other.token {
			t.Fatalf("the lease moved to the other reaper %v after SetTiming", time.Since(start))
		}
	}
	if h.batch() != 64 || h.rules.Load().repair.Batch != 64 {
		t.Errorf("batch %d, repairs' %d, want 64", h.batch(), h.rules.Load().repair.Batch)
	}
}
