package reaper

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/rewrite"
)

// Options configure a Reaper; cmd builds them from the config.
type Options struct {
	Schema *rewrite.Schema
	// DB returns a client for one Redis DB (shared with other upstream work).
	DB func(n int) *redis.Client
	// Interval between ledger sweeps (default 1s).
	Interval time.Duration
	// Batch is the most ledger entries one cleanup script handles (default DefaultBatch).
	Batch int
	// Notifications: subscribe to expired/evicted keyevents (and add them to the upstream's
	// notify-keyspace-events with CONFIG SET if missing). Off: the sweep alone.
	Notifications bool
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
	// Now is the clock (tests). Default: time.Now for lags, and Redis' own clock for what is
	// due, since Redis decides when keys expire.
	Now func() time.Time
}

// Reaper removes expired and evicted sessions from the index. The event path (keyspace
// notifications) makes cleanup fast; the sweep of the deadline ledger makes it complete: an
// event lost while the proxy was down or disconnected is caught by the next sweep.
//
// Every reaper holds a subscription to its own presence channel. One that finds no other
// reaper's channel on its Redis leads without writing anything; several on one Redis share the
// work through a lease key: the holder sweeps and handles events, the others stand by and take
// over within a few seconds if it dies. Every cleanup is one idempotent script, so an overlap
// during a takeover does no harm.
type Reaper struct {
	o      Options
	log    *slog.Logger
	m      *reaperMetrics
	token  string                       // this reaper's lease value and presence channel suffix
	leader atomic.Bool                  // this reaper reaps: alone, or holding the lease key
	dbs    int                          // DBs to sweep (CONFIG GET databases)
	timing atomic.Pointer[reaperTiming] // interval, batch, lease: SetTiming changes them

	// Owned by Run's goroutine (tick, release).
	decided    time.Time // last leadership decision
	leaseUntil time.Time // the lease key holds our token until at most then (zero: not ours)

	fakeClock  bool        // Options.Now was given: it also decides what is due
	needNotify atomic.Bool // notify-keyspace-events still to be checked after a (re)subscription
	// notifyOn: Redis publishes the keyevents the reaper follows, as last seen (CONFIG GET);
	// notifyChecked: when that was, by tick (Run's goroutine).
	notifyOn      atomic.Bool
	notifyChecked time.Time
	refused       atomic.Bool // Redis refused CONFIG at the last (re)subscription: no periodic check

	repairMu  sync.Mutex
	repairing map[int]bool // DB -> repair running (true) or running and asked again (false)

	// rules: the index rules in force (SetSchema); reindexAll: they changed, and the leader
	// is to rebuild every DB's index under them.
	rules      atomic.Pointer[reaperRules]
	reindexAll atomic.Bool
	rebuilding atomic.Bool   // rebuildAll runs
	redecide   atomic.Bool   // the interval changed: decide leadership at the next tick
	wake       chan struct{} // SetTiming wakes Run for it

	// For Status: the ledger's size per DB as of its last sweep, and when that was.
	statusMu  sync.Mutex
	ledgers   map[int]int64
	lastSweep time.Time
}

// Status is what INFO's # Proxy section tells of the reaper.
type Status struct {
	Leading       bool      // this proxy reaps (alone, or holding the lease)
	Notifications int       // 1: Redis publishes the keyevents; 0: it does not; -1: cannot tell (CONFIG refused)
	LedgerEntries int64     // sessions with a TTL in the ledgers, all DBs, as of this proxy's last sweeps
	LastSweep     time.Time // this proxy's last sweep (it may have stopped leading since); zero: none yet
}

// Status reports the reaper's state now.
func (r *Reaper) Status() Status {
	st := Status{Leading: r.leader.Load()}
	switch {
	case r.refused.Load():
		st.Notifications = -1
	case r.notifyOn.Load():
		st.Notifications = 1
	}
	r.statusMu.Lock()
	for _, n := range r.ledgers {
		st.LedgerEntries += n
	}
	st.LastSweep = r.lastSweep
	r.statusMu.Unlock()
	return st
}

// New checks options and builds a reaper; Run starts it.
func New(o Options) (*Reaper, error) {
	if o.Schema == nil || o.DB == nil {
		return nil, errors.New("reaper: schema and DB are required")
	}
	withDefaults(&o.Interval, &o.Batch, &o.Logger)
	fakeClock := o.Now != nil
	if !fakeClock {
		o.Now = time.Now
	}
	r := &Reaper{o: o, log: o.Logger, m: newReaperMetrics(o.Registerer, o.Notifications), token: newToken(),
		fakeClock: fakeClock, wake: make(chan struct{}, 1)}
	r.timing.Store(&reaperTiming{o.Interval, o.Batch, leaseMS(o.Interval)})
	r.rules.Store(newReaperRules(o.Schema, o.Batch))
	return r, nil
}

// reaperRules is what the index rules make of the reaper; SetSchema swaps it.
type reaperRules struct {
	schema *rewrite.Schema
	reap   *redis.Script
	repair *Repairer
}

func newReaperRules(sch *rewrite.Schema, batch int) *reaperRules {
	return &reaperRules{schema: sch, reap: redis.NewScript(sch.Scripts().Reap.Body), repair: NewRepairer(sch, batch)}
}

// SetSchema puts other index rules in force (a config reload), with the same bookkeeping prefix
// (its keys stay where they are). The reaper then rebuilds every DB's index under them, in the
// background (rebuildAll): sessions the new rules own get indexed, and index entries no rule
// owns any more are left to the apps (they are no longer the proxy's).
func (r *Reaper) SetSchema(sch *rewrite.Schema) error {
	if sch.Prefix != r.o.Schema.Prefix {
		return errors.New("reaper: the bookkeeping prefix changes with a restart")
	}
	r.rules.Store(newReaperRules(sch, r.batch()))
	r.reindexAll.Store(true)
	return nil
}

// withDefaults fills in the options every keeper (Reaper, Cluster) shares.
func withDefaults(interval *time.Duration, batch *int, logger **slog.Logger) {
	if *interval <= 0 {
		*interval = time.Second
	}
	if *batch <= 0 {
		*batch = DefaultBatch
	}
	if *logger == nil {
		*logger = slog.New(slog.DiscardHandler)
	}
}

// newToken is a keeper's lease value: random, so each process holds its own.
func newToken() string {
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	return hex.EncodeToString(tok[:])
}

// reaperTiming is the reaper's settings a reload may change.
type reaperTiming struct {
	interval time.Duration
	batch    int
	leaseMS  int64
}

func (r *Reaper) interval() time.Duration { return r.timing.Load().interval }
func (r *Reaper) batch() int              { return r.timing.Load().batch }
func (r *Reaper) lease() int64            { return r.timing.Load().leaseMS }

// SetTiming changes the sweep interval and batch (reaper.interval, reaper.batch, on a reload):
// from the next sweep on; the lease follows the interval at its next renewal. Zero keeps one.
func (r *Reaper) SetTiming(interval time.Duration, batch int) {
	cur := *r.timing.Load()
	changed := interval > 0 && interval != cur.interval
	if changed {
		cur.interval, cur.leaseMS = interval, leaseMS(interval)
	}
	if batch > 0 && batch != cur.batch {
		cur.batch = batch
		r.rules.Store(newReaperRules(r.rules.Load().schema, batch)) // the repairs' batch too
	}
	r.timing.Store(&cur)
	if changed {
		// Decide (and renew the lease, for its new length) at once: the key's TTL was set for
		// the old interval, and the next tick at the new pace would let it lapse under a leader.
		r.redecide.Store(true)
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// leaseMS is how long a lease lasts unless renewed: three intervals, at least 2 s.
func leaseMS(interval time.Duration) int64 { return max(3*interval.Milliseconds(), 2000) }

// leaseKey is the key whose holder does the reaping when several reapers share a Redis (in DB 0).
func (r *Reaper) leaseKey() string { return r.o.Schema.Prefix + "reaper-lease" }

// presenceChannel is the channel this reaper stays subscribed to while it runs: other reapers
// on the same Redis find it with PUBSUB CHANNELS.
func (r *Reaper) presenceChannel() string { return r.o.Schema.Prefix + "reaper:" + r.token }

// presencePattern matches every reaper's presence channel, the prefix taken literally.
func (r *Reaper) presencePattern() string { return globEscape(r.o.Schema.Prefix) + "reaper:*" }

// globEscape escapes the metacharacters of Redis' glob patterns.
func globEscape(s string) string {
	var b strings.Builder
	for i := range len(s) {
		if strings.IndexByte(`*?[]\`, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Leading reports whether this reaper currently does the reaping.
func (r *Reaper) Leading() bool { return r.leader.Load() }

// Run sweeps every Interval and, with Notifications, handles keyevents, until ctx ends.
// It returns nil on cancellation: an unreachable Redis is retried, not fatal.
func (r *Reaper) Run(ctx context.Context) error {
	r.dbs = r.databases(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // the subscriber and the cleaner end with ctx too
	var keys chan dbKey
	if r.o.Notifications {
		keys = make(chan dbKey, eventQueue)
		wg.Go(func() { r.cleanEvents(ctx, keys) })
	}
	up := make(chan struct{})
	wg.Go(func() { r.listen(ctx, keys, up) })
	// The first tick waits a moment for the presence channel: a reaper alone then leads
	// without ever writing the lease key.
	first := time.NewTimer(min(r.interval(), subscribeWait))
	select {
	case <-up:
	case <-first.C:
	case <-ctx.Done():
	}
	first.Stop()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.release()
			return nil
		case <-t.C:
		case <-r.wake: // SetTiming: decide (and renew the lease) now, not at the old pace
			t.Stop()
		}
		next := r.tick(ctx)
		t.Reset(r.nextSweep(next))
	}
}

// subscribeWait bounds the first tick's wait for the subscription.
const subscribeWait = 2 * time.Second

// minSweepGap bounds how often the sweep runs when deadlines come thick and fast.
const minSweepGap = 50 * time.Millisecond

// nextSweep is the wait until the next sweep: until the earliest deadline in the ledgers (so
// a session leaves the index right after its deadline, not up to a whole interval later), at
// most Interval (the lease must be renewed, and Redis may hold sessions the proxy has not seen
// yet) and at least minSweepGap. It does not leave the events a head start: Redis' active expiry
// samples keys, so with many keys carrying TTLs most expiries are reported late (100,000 keys due
// over 10 s: 1,600 events by the time 30,000 were due; bench/reap.sh with a 250 ms head start:
// 50 of 100,000 cleaned by events). The sweep's own touch makes Redis expire the key.
func (r *Reaper) nextSweep(earliest time.Time) time.Duration {
	if earliest.IsZero() {
		return r.interval()
	}
	return min(max(time.Until(earliest), minSweepGap), r.interval())
}

// databases asks Redis how many DBs to sweep; 16 (the default) if it cannot tell.
func (r *Reaper) databases(ctx context.Context) int {
	v, err := r.o.DB(0).ConfigGet(ctx, "databases").Result()
	if err == nil {
		if n, err := strconv.Atoi(v["databases"]); err == nil && n > 0 {
			return n
		}
	}
	return 16
}

// tick sweeps every DB while this reaper leads, deciding again every half interval as it goes:
// a backlog in several DBs must not let the lease lapse under a live holder.
// It returns the earliest deadline left in the ledgers (zero if none or not leading).
func (r *Reaper) tick(ctx context.Context) time.Time {
	// New rules: this proxy rebuilds every DB's index under them, leader or not (the last
	// proxy to reload then covers the session writes others made under the old rules), in the
	// background, and again at a later tick if it fails.
	if r.reindexAll.Load() && r.rebuilding.CompareAndSwap(false, true) {
		r.reindexAll.Store(false)
		go r.rebuildAll(ctx)
	}
	if r.needNotify.Load() {
		r.ensureNotifications(ctx) // a Redis just back may not have answered the first time
	} else if r.o.Notifications && !r.refused.Load() && time.Since(r.notifyChecked) >= notifyCheckEvery*r.interval() {
		r.checkNotifications(ctx)
	}
	var earliest time.Time
	for db := 0; db < r.dbs && ctx.Err() == nil; db++ {
		// Sweeps come up to 20 a second when deadlines crowd: a decision holds for half an
		// interval, so PUBSUB CHANNELS (which walks every channel) and the renewal stay rare.
		if r.redecide.Swap(false) || !r.leader.Load() || time.Since(r.decided) > r.interval()/2 {
			if !r.lead(ctx) {
				return time.Time{}
			}
		}
		if next := r.sweep(ctx, db); !next.IsZero() && (earliest.IsZero() || next.Before(earliest)) {
			earliest = next
		}
	}
	return earliest
}

// lead decides whether this reaper reaps until the next decision. Alone on its Redis it leads
// without a write, so a single proxy leaves nothing for apps to observe (client tracking,
// keyspace events, replicas, eviction); with other reapers, or when it cannot tell, the lease
// key decides. Going from alone to several converges within a decision or two: the newcomer
// takes the free key, the one that led alone then finds it taken.
func (r *Reaper) lead(ctx context.Context) bool {
	r.decided = time.Now()
	if r.alone(ctx) {
		r.setLeader(true, "alone")
		return true
	}
	return r.holdLease(ctx)
}

// alone reports whether this reaper's presence channel is the only reaper channel on its Redis.
// PUBSUB refused (ACL) or its own channel not listed (subscription not up yet): false.
func (r *Reaper) alone(ctx context.Context) bool {
	chans, err := r.o.DB(0).PubSubChannels(ctx, r.presencePattern()).Result()
	if err != nil {
		r.log.Debug("reaper presence", "err", err)
		return false
	}
	return len(chans) == 1 && chans[0] == r.presenceChannel()
}

// holdLease takes the lease key if it is free or renews it if it is ours.
func (r *Reaper) holdLease(ctx context.Context) bool {
	c := r.o.DB(0)
	ok, err := c.SetNX(ctx, r.leaseKey(), r.token, time.Duration(r.lease())*time.Millisecond).Result()
	if err == nil && !ok {
		// Renew only if it is still ours (compare-and-expire in one step).
		n, e := renewLease.Run(ctx, c, []string{r.leaseKey()}, r.token, r.lease()).Int()
		ok, err = n == 1, e
	}
	switch {
	case err != nil:
		r.log.Debug("reaper lease", "err", err)
		ok = false // leaseUntil stays: the key may still be ours
	case ok:
		r.leaseUntil = time.Now().Add(time.Duration(r.lease()) * time.Millisecond)
	default:
		r.leaseUntil = time.Time{}
	}
	r.setLeader(ok, "lease")
	return ok
}

// setLeader records a decision, logging changes.
func (r *Reaper) setLeader(ok bool, by string) {
	if r.leader.Swap(ok) != ok {
		r.log.Info("reaper leadership", "leading", ok, "by", by)
	}
}

var renewLease = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`)

// release gives the lease key up on shutdown, if it may still hold our token, so another proxy
// takes over at once. A reaper that led alone has nothing to give back.
func (r *Reaper) release() {
	r.leader.Store(false)
	if !time.Now().Before(r.leaseUntil) {
		return
	}
	r.leaseUntil = time.Time{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = releaseLease.Run(ctx, r.o.DB(0), []string{r.leaseKey()}, r.token).Err()
}

var releaseLease = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

// sweep cleans the due ledger entries of one DB in bounded batches: a full batch is followed by
// another, up to one interval of work, so a backlog after downtime drains steadily.
func (r *Reaper) sweep(ctx context.Context, db int) time.Time {
	c := r.o.DB(db)
	deadline := time.Now().Add(r.interval())
	for ctx.Err() == nil && time.Now().Before(deadline) {
		now := r.o.Now()
		due := ""
		if r.fakeClock {
			due = strconv.FormatInt(now.UnixMilli(), 10)
		}
		res, err := r.rules.Load().reap.Run(ctx, c, nil, "due", due, r.batch()).Int64Slice()
		if err != nil {
			r.log.Debug("reaper sweep", "db", db, "err", err)
			return time.Time{}
		}
		r.account(res, pathSweep, now)
		// Stop when the batch was not full, or removed nothing (only re-scored entries whose
		// sessions live on): going on would read the same entries again.
		if res[0] < int64(r.batch()) || len(res) == 2 {
			break
		}
	}
	if n, err := c.ZCard(ctx, r.o.Schema.LedgerKey()).Result(); err == nil {
		r.m.ledger.WithLabelValues(strconv.Itoa(db)).Set(float64(n))
		r.statusMu.Lock()
		if r.ledgers == nil {
			r.ledgers = map[int]int64{}
		}
		r.ledgers[db], r.lastSweep = n, time.Now()
		r.statusMu.Unlock()
		if n == 0 {
			return time.Time{}
		}
	}
	if r.fakeClock {
		return time.Time{} // a fake clock: deadlines say nothing about real waiting
	}
	first, err := c.ZRangeWithScores(ctx, r.o.Schema.LedgerKey(), 0, 0).Result()
	if err != nil || len(first) == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(first[0].Score))
}

// account records a reap script's result: {looked at, re-scored, deadlines of removed...}.
func (r *Reaper) account(res []int64, path string, now time.Time) {
	if len(res) < 2 {
		return
	}
	r.m.stale.Add(float64(res[1]))
	for _, d := range res[2:] {
		r.m.cleanups.WithLabelValues(path).Inc()
		lag := now.Sub(time.UnixMilli(d))
		r.m.lag.WithLabelValues(path).Observe(max(lag.Seconds(), 0))
	}
}

// Cleanup paths.
const (
	pathEvent = "event"
	pathSweep = "sweep"
)

// channels are what the reaper subscribes to: its presence channel and, with Notifications,
// the expired and evicted keyevent channels of every DB. Exact channels, not patterns, so
// PUBSUB NUMPAT answers apps as it would without the proxy.
func (r *Reaper) channels() []string {
	chans := []string{r.presenceChannel()}
	if r.o.Notifications {
		for db := range r.dbs {
			chans = append(chans, fmt.Sprintf("__keyevent@%d__:expired", db), fmt.Sprintf("__keyevent@%d__:evicted", db))
		}
	}
	return chans
}

// listen holds the reaper's subscription (see channels), closing up once first subscribed, and
// cleans what keyevents name. go-redis resubscribes after a reconnect; each (re)subscription
// re-checks the upstream's notify-keyspace-events, since a restarted Redis forgets a CONFIG SET.
func (r *Reaper) listen(ctx context.Context, keys chan<- dbKey, up chan<- struct{}) {
	ps := r.o.DB(0).Subscribe(ctx, r.channels()...)
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() }) // Receive does not watch ctx
	defer stop()
	defer ps.Close()
	subscribed := 0
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			time.Sleep(100 * time.Millisecond) // go-redis reconnects on the next Receive
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			// On a new connection the first confirmation counts 1 subscription: one mark per
			// (re)subscription, whatever the number of channels and the order go-redis
			// resubscribes them in.
			if m.Kind != "subscribe" || m.Count != 1 {
				continue
			}
			if subscribed++; subscribed > 1 {
				r.m.reconnects.Inc()
			}
			if r.o.Notifications {
				r.needNotify.Store(true) // checked now and, until it succeeds, every tick
				r.ensureNotifications(ctx)
			}
			if subscribed == 1 {
				close(up)
			}
		case *redis.Message:
			if r.o.Notifications {
				r.event(ctx, m.Channel, m.Payload, keys)
			}
		}
	}
}

// dbKey is a session key named by an event, in its DB.
type dbKey struct {
	db  int
	key string
}

// eventQueue bounds the events waiting for cleanup; beyond it they are dropped, and the sweep
// cleans those sessions when their deadline comes up in the ledger.
const eventQueue = 1 << 16

// cleanEvents cleans the sessions named by events in batches: one reap script per DB for
// everything that arrived meanwhile (up to Batch keys), so a burst of expiries costs a few
// round trips, not one per key.
func (r *Reaper) cleanEvents(ctx context.Context, keys <-chan dbKey) {
	byDB := map[int][]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case k := <-keys:
			byDB[k.db] = append(byDB[k.db], k.key)
		}
	drain:
		for n := 1; n < r.batch(); n++ {
			select {
			case k := <-keys:
				byDB[k.db] = append(byDB[k.db], k.key)
			default:
				break drain
			}
		}
		now := r.o.Now()
		for db, ks := range byDB {
			res, err := r.rules.Load().reap.Run(ctx, r.o.DB(db), ks, "keys").Int64Slice()
			if err != nil {
				r.log.Debug("reaper event", "db", db, "keys", len(ks), "err", err)
			} else {
				r.account(res, pathEvent, now)
			}
			delete(byDB, db)
		}
	}
}

// event handles one keyevent: "__keyevent@<db>__:expired|evicted" with the key as payload;
// session keys are queued for cleanEvents.
func (r *Reaper) event(ctx context.Context, channel, key string, keys chan<- dbKey) {
	if !r.leader.Load() {
		return // the lease holder handles it; the sweep is the safety net either way
	}
	rest, ok := strings.CutPrefix(channel, "__keyevent@")
	dbs, kind, ok2 := strings.Cut(rest, "__:")
	db, err := strconv.Atoi(dbs)
	if !ok || !ok2 || err != nil {
		return
	}
	sch := r.rules.Load().schema
	if kind == "evicted" && r.ownKey(key) {
		r.m.evictedOwn.Inc()
		r.log.Warn("Redis evicted a bookkeeping key of the proxy; repairing the DB (use a volatile-* maxmemory-policy)", "db", db, "key", key)
		r.repairSoon(ctx, db)
		return
	}
	if sch.Match([]byte(key)) < 0 {
		return
	}
	select {
	case keys <- dbKey{db, key}:
	default: // a backlog: the sweep cleans it from the ledger
	}
}

// ownKey reports whether key is one of the proxy's own: owner map, ledger or an index key.
func (r *Reaper) ownKey(key string) bool {
	sch := r.rules.Load().schema
	if key == sch.OwnersKey() || key == sch.LedgerKey() {
		return true
	}
	for i, rule := range sch.Rules {
		if rule.Layout == rewrite.LayoutGlobalZSet {
			if key == rule.IndexKey {
				return true
			}
		} else if _, ok := sch.UIDFromIndexKey(i, key); ok {
			return true
		}
	}
	return false
}

// repairSoon starts a repair of db unless one is running; then it asks for one more pass when
// it is done (the running one may have passed the evicted key already). Evictions come in
// bursts: this keeps it to at most two repairs per burst per DB.
func (r *Reaper) repairSoon(ctx context.Context, db int) {
	r.repairMu.Lock()
	defer r.repairMu.Unlock()
	if r.repairing == nil {
		r.repairing = map[int]bool{}
	}
	if running, ok := r.repairing[db]; ok {
		if running {
			r.repairing[db] = false // false: run again when done
		}
		return
	}
	r.repairing[db] = true
	go func() {
		for {
			r.repairDB(ctx, db)
			r.repairMu.Lock()
			again := !r.repairing[db]
			if !again || ctx.Err() != nil {
				delete(r.repairing, db)
				r.repairMu.Unlock()
				return
			}
			r.repairing[db] = true
			r.repairMu.Unlock()
		}
	}()
}

// rebuildAll rebuilds every DB's index under the rules in force (after SetSchema); an error
// asks for another try at a later tick.
func (r *Reaper) rebuildAll(ctx context.Context) {
	defer r.rebuilding.Store(false)
	rules := r.rules.Load()
	for db := range r.dbs {
		for i := range rules.schema.Rules {
			rep, err := rules.repair.Run(ctx, r.o.DB(db), i, true)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn("index rebuild for new rules failed; trying again", "db", db, "err", err)
					r.reindexAll.Store(true)
				}
				return
			}
			r.log.Info("index rebuilt for new rules", append([]any{"db", db}, rep.Fields()...)...)
		}
		if r.rules.Load().schema != rules.schema {
			return // other rules since: their own rebuild follows (reindexAll)
		}
	}
}

// repairDB rebuilds every rule's index in db after Redis evicted bookkeeping.
func (r *Reaper) repairDB(ctx context.Context, db int) {
	rules := r.rules.Load()
	for i := range rules.schema.Rules {
		rep, err := rules.repair.Run(ctx, r.o.DB(db), i, true)
		if err != nil {
			r.log.Warn("eviction repair failed", "db", db, "err", err)
			return
		}
		r.m.repairs.Inc()
		r.log.Info("eviction repair", append([]any{"db", db}, rep.Fields()...)...)
	}
}

// ensureNotifications adds the expired (x), evicted (e) and keyevent (E) classes to the
// upstream's notify-keyspace-events, keeping what is set. A refusal (managed Redis, ACL) is
// logged once; the ledger sweep then works alone.
func (r *Reaper) ensureNotifications(ctx context.Context) {
	c := r.o.DB(0)
	cur, err := c.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err == nil {
		flags := cur["notify-keyspace-events"]
		if want := missingFlags(flags); want != "" {
			err = c.ConfigSet(ctx, "notify-keyspace-events", flags+want).Err()
		}
	}
	var rerr redis.Error
	switch {
	case err == nil:
		r.needNotify.Store(false)
		r.refused.Store(false)
		r.setNotifyOn(true, "")
	case errors.As(err, &rerr) && !strings.HasPrefix(err.Error(), "LOADING"):
		// Redis answered no (managed Redis, ACL): log once per (re)subscription, don't retry.
		r.needNotify.Store(false)
		r.refused.Store(true) // a CONFIG GET every 10 intervals would only fill Redis' ACL log
		r.m.notifications.Set(-1)
		r.m.configRefused.Inc()
		r.log.Warn("cannot enable keyspace notifications; expiry cleanup runs on the ledger sweep alone", "err", err)
	default:
		r.log.Debug("keyspace notifications not checked yet; retrying", "err", err) // transport: next tick
	}
}

// notifyCheckEvery: how many reaper intervals apart notify-keyspace-events is read again, to
// notice a CONFIG SET that took the keyevents away (10 s by default).
const notifyCheckEvery = 10

// checkNotifications reads notify-keyspace-events and says so when the keyevents the reaper
// follows are no longer published (a CONFIG SET behind the proxy, through it, or a restart
// with another config): the ledger sweep then cleans every expired session on its own, at its
// deadline. It does not set them back: whoever changed them may mean it (the next
// (re)subscription, e.g. after a Redis restart, adds what is missing again, as at start).
func (r *Reaper) checkNotifications(ctx context.Context) {
	r.notifyChecked = time.Now()
	cur, err := r.o.DB(0).ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		r.log.Debug("keyspace notifications not checked", "err", err)
		return
	}
	flags := cur["notify-keyspace-events"]
	r.setNotifyOn(missingFlags(flags) == "", flags)
}

// setNotifyOn records whether Redis publishes the keyevents, logging a change seen by a check
// (flags: what Redis has; "" when the change is the reaper's own doing).
func (r *Reaper) setNotifyOn(on bool, flags string) {
	if on {
		r.m.notifications.Set(1)
	} else {
		r.m.notifications.Set(0)
	}
	if r.notifyOn.Swap(on) == on || flags == "" && on {
		return
	}
	if on {
		r.log.Info("keyspace notifications are on again", "notify-keyspace-events", flags)
		return
	}
	r.log.Warn("keyspace notifications are off on Redis (changed behind the reaper?): expired sessions leave the index at the ledger sweep",
		"notify-keyspace-events", flags, "missing", missingFlags(flags))
}

// missingFlags returns the notify-keyspace-events classes still needed: E (keyevent), and x and
// e unless A (all classes) is set.
func missingFlags(flags string) string {
	var add string
	if !strings.Contains(flags, "E") {
		add += "E"
	}
	if !strings.Contains(flags, "A") {
		if !strings.Contains(flags, "x") {
			add += "x"
		}
		if !strings.Contains(flags, "e") {
			add += "e"
		}
	}
	return add
}

// String is for logs.
func (r *Reaper) String() string { return fmt.Sprintf("reaper(%s)", r.token) }
