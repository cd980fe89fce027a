package reaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/cluster"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// ClusterOptions configure the index keeper of a Redis Cluster.
type ClusterOptions struct {
	Schema *rewrite.Schema
	// Client routes by slot and follows redirects; it runs as the proxy's own user.
	Client        *redis.ClusterClient
	Interval      time.Duration // between passes over the primaries (default 1s)
	Batch         int           // outbox entries or ledger entries per slot and step (default DefaultBatch)
	Notifications bool          // subscribe to expired/evicted keyevents on the primaries
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Cluster keeps the session index on a Redis Cluster (README "Guarantees on Redis Cluster").
// A session write changes the session and its slot's bookkeeping in one script on the session's
// node and queues the index changes in the slot's outbox (rewrite.ClusterScripts). Cluster
// applies outboxes to the index keys' nodes: at once for the slots the proxy wrote to (Dirty),
// and for every slot with entries left, found on each pass over the primaries (a proxy that
// died between the two steps). Each primary's pass is done by the proxy holding that node's
// lease: it also sweeps the node's per-slot ledgers and handles its expired/evicted events.
//
// Index changes carry a sequence number that only grows per slot, and the index side skips a
// change older than the last one made for the session, so applying an entry twice, or two
// proxies applying the same outbox at once, cannot reorder a session's changes.
type Cluster struct {
	o        ClusterOptions
	log      *slog.Logger
	sc       rewrite.ClusterScripts
	reap     *redis.Script
	index    *redis.Script
	ack      *redis.Script
	node     *redis.Script
	state    *redis.Script
	resyncSc *redis.Script
	revokeSc *redis.Script
	token    string
	leaseMS  int64
	m        *clusterMetrics

	queued [cluster.Slots]atomic.Bool // slot is in dirty
	dirty  chan int

	mu   sync.Mutex                    // subs, held
	subs map[string]context.CancelFunc // node address -> its keyevent subscription
	held []primary                     // the primaries whose lease the last pass held

	owners     map[int]string  // slot -> primary, as of the last pass (Run's goroutine)
	promoted   map[string]bool // primaries that took over slots in a failover, not caught up yet (Run's goroutine)
	catchingUp atomic.Bool
	bg         sync.WaitGroup // subscriptions and catch-ups, waited for when Run ends
}

// NewCluster checks options and builds the keeper; Run starts it.
func NewCluster(o ClusterOptions) (*Cluster, error) {
	if o.Schema == nil || o.Client == nil {
		return nil, errors.New("reaper: cluster: schema and client are required")
	}
	withDefaults(&o.Interval, &o.Batch, &o.Logger)
	sc := o.Schema.Scripts().Cluster
	return &Cluster{o: o, log: o.Logger, sc: sc, reap: redis.NewScript(sc.Reap.Body),
		index: redis.NewScript(sc.Index.Body), ack: redis.NewScript(sc.Ack.Body), node: redis.NewScript(sc.Node.Body),
		state: redis.NewScript(sc.State.Body), resyncSc: redis.NewScript(sc.Resync.Body), revokeSc: redis.NewScript(sc.Revoke.Body),
		token: newToken(), leaseMS: leaseMS(o.Interval),
		m: newClusterMetrics(o.Registerer), dirty: make(chan int, cluster.Slots), subs: map[string]context.CancelFunc{}}, nil
}

// Dirty says that slot's outbox may have entries: a session write there just ran. It never
// blocks; each slot waits in the queue at most once.
func (c *Cluster) Dirty(slot int) {
	if slot < 0 || slot >= cluster.Slots || c.queued[slot].Swap(true) {
		return
	}
	c.dirty <- slot // cap Slots: room for every slot once
}

// Run applies outboxes and makes the passes over the primaries until ctx ends.
func (c *Cluster) Run(ctx context.Context) error {
	events := make(chan string, eventQueue)
	var wg sync.WaitGroup
	wg.Go(func() { c.applyLoop(ctx) })
	wg.Go(func() { c.eventLoop(ctx, events) })
	wg.Go(func() { c.sweepLoop(ctx) })
	t := time.NewTicker(c.o.Interval)
	defer t.Stop()
	for {
		c.pass(ctx, events)
		select {
		case <-ctx.Done():
			c.mu.Lock()
			for _, cancel := range c.subs {
				cancel()
			}
			held := c.held
			c.mu.Unlock()
			wg.Wait()
			c.bg.Wait()
			c.release(held)
			return nil
		case <-t.C:
		}
	}
}

// sweepEvery is how often the ledgers of the held primaries are swept: more often than the
// passes (reaper.interval), since a sweep also makes Redis expire the due keys it touches, which
// it otherwise does lazily (an expired session's keyevent can come seconds late). One sweep is
// one script call per primary that asks which of its slots have due entries.
const sweepEvery = 250 * time.Millisecond

// sweepLoop sweeps the primaries whose lease the last pass held.
func (c *Cluster) sweepLoop(ctx context.Context) {
	t := time.NewTicker(min(sweepEvery, c.o.Interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		held := c.held
		c.mu.Unlock()
		for _, p := range held {
			if nc, err := c.nodeClient(ctx, p.slots[0]); err == nil {
				c.sweep(ctx, nc, p.slots)
			}
		}
	}
}

// applyLoop applies the outboxes of dirty slots, up to 256 slots a step.
func (c *Cluster) applyLoop(ctx context.Context) {
	var slots []int
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-c.dirty:
			slots = append(slots[:0], s)
		}
	more:
		for len(slots) < 256 {
			select {
			case s := <-c.dirty:
				slots = append(slots, s)
			default:
				break more
			}
		}
		for _, s := range slots {
			c.queued[s].Store(false) // a write from here on queues the slot again
		}
		full, err := c.drain(ctx, slots)
		if err != nil && ctx.Err() == nil {
			c.log.Debug("cluster index: applying outboxes", "slots", len(slots), "err", err)
		}
		for _, s := range full {
			c.Dirty(s)
		}
	}
}

// entry is one outbox entry: "<seq> <a|r><rule> <score|-> <#uid> <uid><session key>".
type entry struct {
	seq        int64
	kind       string // "a" or "r"
	rule       int    // 1-based, as in Lua
	score, uid string
	key        string
	raw        string
}

func parseEntry(s string) (entry, error) {
	e := entry{raw: s}
	f := strings.SplitN(s, " ", 5)
	if len(f) != 5 || len(f[1]) < 2 {
		return e, fmt.Errorf("reaper: outbox entry %q: bad shape", s)
	}
	var err1, err2, err3 error
	e.seq, err1 = strconv.ParseInt(f[0], 10, 64)
	e.kind = f[1][:1]
	e.rule, err2 = strconv.Atoi(f[1][1:])
	e.score = f[2]
	n, err3 := strconv.Atoi(f[3])
	if err := errors.Join(err1, err2, err3); err != nil || n < 0 || n > len(f[4]) || (e.kind != "a" && e.kind != "r") {
		return e, fmt.Errorf("reaper: outbox entry %q: bad fields", s)
	}
	e.uid, e.key = f[4][:n], f[4][n:]
	return e, nil
}

// staleAfter is how old read entries may be when they are sent to be applied: cindex.lua keeps
// a removed session's record 10 minutes, and a late duplicate must come before that (the
// sending itself is bounded by the client's read and write timeouts, seconds).
const staleAfter = time.Minute

// drain applies the outboxes of slots: read their heads, make each change on its index key's
// node, drop what was made. A slot whose changes did not all go through keeps its entries (the
// next pass finds them); the slots whose batch was full (more entries may wait) are returned.
func (c *Cluster) drain(ctx context.Context, slots []int) ([]int, error) {
	sch := c.o.Schema
	read := time.Now()
	pipe := c.o.Client.Pipeline()
	heads := make([]*redis.StringSliceCmd, len(slots))
	for i, s := range slots {
		heads[i] = pipe.LRange(ctx, c.book(s)[bookOutbox], 0, int64(c.o.Batch-1))
	}
	_, err := pipe.Exec(ctx)
	type change struct {
		slot int
		e    entry
	}
	var changes []change
	for i, h := range heads {
		for _, raw := range h.Val() {
			e, perr := parseEntry(raw)
			if perr != nil || e.rule < 1 || e.rule > len(sch.Rules) {
				c.log.Warn("cluster index: dropping a malformed outbox entry", "slot", slots[i], "entry", raw)
				e.kind = "" // acked, not applied
			}
			changes = append(changes, change{slots[i], e})
		}
	}
	if len(changes) == 0 {
		return nil, err
	}
	if time.Since(read) > staleAfter {
		return nil, errors.New("reaper: outbox entries read too long ago; left for the next pass")
	}
	calls := make([]call, 0, len(changes))
	idx := make([]int, 0, len(changes))
	for i, ch := range changes {
		if ch.e.kind == "" {
			continue
		}
		calls = append(calls, c.indexChange(sch.IndexKey(ch.e.rule-1, ch.e.uid), ch.e.seq, ch.e.kind, ch.e.rule, ch.e.score, ch.e.uid, ch.e.key))
		idx = append(idx, i)
	}
	res := c.run(ctx, calls)
	failed := map[int]bool{}
	now := time.Now()
	for k, r := range res {
		ch := changes[idx[k]]
		if r.err != nil {
			failed[ch.slot] = true
			if !failed[-1] {
				c.log.Debug("cluster index: change not made", "slot", ch.slot, "err", r.err)
				failed[-1] = true
			}
			continue
		}
		if n, _ := r.val.(int64); n == 1 {
			c.m.changes.WithLabelValues("made").Inc()
		} else {
			c.m.changes.WithLabelValues("skipped").Inc()
		}
		c.m.lag.Observe(max(now.Sub(time.UnixMicro(ch.e.seq)).Seconds(), 0))
	}
	// Drop what was made, per slot up to its last entry read.
	var acks []call
	var full []int
	for i, h := range heads {
		s := slots[i]
		if failed[s] || len(h.Val()) == 0 {
			continue
		}
		var last int64 // the highest seq read (a malformed entry has none)
		for _, raw := range h.Val() {
			if e, err := parseEntry(raw); err == nil {
				last = max(last, e.seq)
			}
		}
		acks = append(acks, call{c.ack, []string{c.book(s)[bookOutbox]}, []any{last}})
		if len(h.Val()) == c.o.Batch {
			full = append(full, s)
		}
	}
	for _, r := range c.run(ctx, acks) {
		if r.err != nil {
			err = errors.Join(err, r.err)
		}
	}
	if len(failed) > 0 {
		err = errors.Join(err, fmt.Errorf("reaper: index changes of %d slots not made", len(failed)-1))
	}
	return full, err
}

// The slot's bookkeeping keys, in rewrite.Schema.SlotKeys' order.
const (
	bookOwners = iota
	bookLedger
	bookOutbox
)

// book is the bookkeeping keys of slot.
func (c *Cluster) book(slot int) [4]string { return c.o.Schema.SlotKeys(cluster.SlotTag(slot)) }

// bookOf is the bookkeeping keys of key's slot.
func (c *Cluster) bookOf(key string) [4]string { return c.book(cluster.Slot([]byte(key))) }

// indexChange is the cindex.lua call that makes one index change on ikey's node: args are
// seq, kind, rule (1-based), score, uid, session key.
func (c *Cluster) indexChange(ikey string, args ...any) call {
	book := c.o.Schema.IndexSlotKeys(cluster.SlotTag(cluster.Slot([]byte(ikey))))
	return call{c.index, []string{book[0], book[1], ikey}, args}
}

// call is one script call of a pipeline.
type call struct {
	sc   *redis.Script
	keys []string
	args []any
}

type result struct {
	val any
	err error
}

// run runs calls in one pipeline (go-redis sends each to its keys' node); a call that meets an
// emptied script cache (NOSCRIPT) is run again on its own, loading the script.
func (c *Cluster) run(ctx context.Context, calls []call) []result {
	out := make([]result, len(calls))
	if len(calls) == 0 {
		return out
	}
	pipe := c.o.Client.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, k := range calls {
		cmds[i] = k.sc.EvalSha(ctx, pipe, k.keys, k.args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		v, err := cmd.Result()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			v, err = calls[i].sc.Run(ctx, c.o.Client, calls[i].keys, calls[i].args...).Result()
		}
		if errors.Is(err, redis.Nil) {
			err = nil
		}
		out[i] = result{v, err}
	}
	return out
}

// primary is one primary of the current slot map and the slots it serves.
type primary struct {
	addr  string
	slots []int
}

// primaries reads the slot map (CLUSTER SLOTS through the client).
func (c *Cluster) primaries(ctx context.Context) ([]primary, error) {
	ranges, err := c.o.Client.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("reaper: cluster slots: %w", err)
	}
	var ps []primary
	for _, r := range ranges {
		if len(r.Nodes) == 0 {
			continue
		}
		k := slices.IndexFunc(ps, func(p primary) bool { return p.addr == r.Nodes[0].Addr })
		if k < 0 {
			k = len(ps)
			ps = append(ps, primary{addr: r.Nodes[0].Addr})
		}
		for s := int(r.Start); s <= int(r.End); s++ {
			ps[k].slots = append(ps[k].slots, s)
		}
	}
	for i := range ps {
		slices.Sort(ps[i].slots)
	}
	return ps, nil
}

// nodeClient is the client of the node that serves slot.
func (c *Cluster) nodeClient(ctx context.Context, slot int) (*redis.Client, error) {
	return c.o.Client.MasterForKey(ctx, "{"+cluster.SlotTag(slot)+"}")
}

// pass goes over the primaries: for each whose lease this proxy holds (or takes), it keeps the
// keyevent subscription, queues the slots with outbox entries left and sweeps due ledgers.
func (c *Cluster) pass(ctx context.Context, events chan<- string) {
	// go-redis reads the slot map again on -MOVED, or when its copy is 10 s old: a failover
	// (the dead primary's slots now served by its replica) is learned within an interval.
	c.o.Client.ReloadState(ctx)
	ps, err := c.primaries(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Debug("cluster index: no slot map", "err", err)
		}
		return
	}
	if c.promoted == nil {
		c.promoted = map[string]bool{}
	}
	for n := range c.failovers(ps) {
		c.promoted[n] = true
	}
	for n := range c.promoted { // no longer a primary: nothing to catch up there
		if !slices.ContainsFunc(ps, func(p primary) bool { return p.addr == n }) {
			delete(c.promoted, n)
		}
	}
	held := map[string]bool{}
	var heldPs []primary
	for _, p := range c.leases(ctx, ps) {
		held[p.addr] = true
		// One catch-up at a time; a failover seen meanwhile waits for the next pass.
		if c.promoted[p.addr] && c.catchingUp.CompareAndSwap(false, true) {
			delete(c.promoted, p.addr)
			c.bg.Go(func() { c.catchUp(ctx, p.addr) })
		}
		nc, err := c.nodeClient(ctx, p.slots[0])
		if err != nil {
			continue
		}
		if c.o.Notifications {
			c.subscribe(ctx, p.addr, nc, events)
		}
		pending, err := c.slotsWith(ctx, nc, "outbox", p.slots)
		if err == nil {
			for _, s := range pending {
				c.Dirty(s)
			}
		}
		heldPs = append(heldPs, p)
	}
	c.m.leases.Set(float64(len(held)))
	c.mu.Lock()
	c.held = heldPs
	for addr, cancel := range c.subs { // nodes no longer primaries, or whose lease went elsewhere
		if !held[addr] {
			cancel()
			delete(c.subs, addr)
		}
	}
	c.mu.Unlock()
}

// failovers compares the slot map with the last pass's: it returns the primaries that took
// over slots from a node that is no longer a primary (a failover, not a reshard, which moves
// the slots' keys, bookkeeping included).
func (c *Cluster) failovers(ps []primary) map[string]bool {
	now := map[int]string{}
	isPrimary := map[string]bool{}
	for _, p := range ps {
		isPrimary[p.addr] = true
		for _, s := range p.slots {
			now[s] = p.addr
		}
	}
	promoted := map[string]bool{}
	for s, was := range c.owners {
		if by, ok := now[s]; ok && by != was && !isPrimary[was] {
			promoted[by] = true
		}
	}
	c.owners = now
	return promoted
}

// catchUp runs after a failover: the index changes the lost primary had made but not yet
// replicated are gone with it, and so are its sessions' last writes, whose index changes may
// have been made elsewhere. A rebuild of every rule (Repair) queues every session's entry
// again and removes entries of sessions that no longer exist.
func (c *Cluster) catchUp(ctx context.Context, node string) {
	defer c.catchingUp.Store(false)
	c.m.catchUps.Inc()
	for r := range c.o.Schema.Rules {
		rep, err := c.Repair(ctx, r, true)
		if err != nil {
			c.log.Warn("cluster index: catch-up after a failover failed; the next failover or SESSIONS.REINDEX repairs", "node", node, "err", err)
			return
		}
		c.log.Info("cluster index: catch-up after a failover", append([]any{"node", node}, rep.Fields()...)...)
	}
}

// slotsWith asks node which of slots have work: "outbox" entries or "due" ledger entries.
func (c *Cluster) slotsWith(ctx context.Context, node *redis.Client, mode string, slots []int) ([]int, error) {
	args := make([]any, 0, 2+len(slots))
	args = append(args, mode, "") // "": due by Redis' clock
	which := bookOutbox
	if mode == "due" {
		which = bookLedger
	}
	for _, s := range slots {
		args = append(args, c.book(s)[which])
	}
	pos, err := c.node.Run(ctx, node, nil, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("reaper: slots with %s: %w", mode, err)
	}
	out := make([]int, 0, len(pos))
	for _, p := range pos {
		if p >= 1 && int(p) <= len(slots) {
			out = append(out, slots[p-1])
		}
	}
	return out, nil
}

// sweep cleans the due ledger entries of a node's slots, one reap script per due slot (batch
// entries each), all in one pipeline; a slot whose batch was full goes again, within one
// interval.
func (c *Cluster) sweep(ctx context.Context, node *redis.Client, slots []int) {
	until := time.Now().Add(c.o.Interval)
	for ctx.Err() == nil && time.Now().Before(until) {
		due, err := c.slotsWith(ctx, node, "due", slots)
		if err != nil || len(due) == 0 {
			return
		}
		calls := make([]call, len(due))
		for i, s := range due {
			book := c.book(s)
			calls[i] = call{c.reap, book[:], []any{"due", "", c.o.Batch}}
		}
		now := time.Now()
		again := 0
		for i, r := range c.run(ctx, calls) {
			res, ok := int64s(r)
			if !ok {
				continue
			}
			c.m.scripts.WithLabelValues(pathSweep).Inc()
			c.account(res, pathSweep, now)
			if len(res) > 2 {
				c.Dirty(due[i])
			}
			if res[0] == int64(c.o.Batch) && len(res) > 2 {
				again++
			}
		}
		if again == 0 {
			return
		}
	}
}

func int64s(r result) ([]int64, bool) {
	vs, ok := r.val.([]any)
	if r.err != nil || !ok || len(vs) < 2 {
		return nil, false
	}
	out := make([]int64, len(vs))
	for i, v := range vs {
		switch v := v.(type) {
		case int64:
			out[i] = v
		case string: // a deadline, as ZSCORE gave it
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, false
			}
			out[i] = int64(f)
		default:
			return nil, false
		}
	}
	return out, true
}

// account records a reap script's result: {looked at, re-scored, deadlines of removed...}.
func (c *Cluster) account(res []int64, path string, now time.Time) {
	for _, d := range res[2:] {
		c.m.cleanups.WithLabelValues(path).Inc()
		c.m.reapLag.WithLabelValues(path).Observe(max(now.Sub(time.UnixMilli(d)).Seconds(), 0))
	}
}

// holdLease takes or renews the lease of the node serving first (its lowest slot): the key
// lives in that slot, so it stays with the node's slots across a failover.
func (c *Cluster) holdLease(ctx context.Context, first int) bool {
	ok, err := c.o.Client.SetNX(ctx, c.leaseKey(first), c.token, time.Duration(c.leaseMS)*time.Millisecond).Result()
	return err == nil && ok
}

// renewLease renews the lease of the node serving first if this proxy holds it.
func (c *Cluster) renewLease(ctx context.Context, first int) bool {
	n, err := renewLease.Run(ctx, c.o.Client, []string{c.leaseKey(first)}, c.token, c.leaseMS).Int()
	return err == nil && n == 1
}

// leases returns the primaries whose lease this proxy holds for the next interval. The proxies
// share the primaries: each records itself in a keepers hash (in slot 0) with an expiry, and
// holds at most its share, ceil(primaries / live proxies): it renews what it holds, takes free
// leases up to its share, and gives up leases beyond it (a proxy that joined takes them).
func (c *Cluster) leases(ctx context.Context, ps []primary) []primary {
	share := len(ps)
	if n := c.keepers(ctx); n > 1 {
		share = (len(ps) + n - 1) / n
	}
	var mine, free []primary
	for _, p := range ps {
		switch {
		case len(p.slots) == 0:
		case c.renewLease(ctx, p.slots[0]):
			mine = append(mine, p)
		default:
			free = append(free, p)
		}
	}
	for len(mine) > share {
		p := mine[len(mine)-1]
		mine = mine[:len(mine)-1]
		_ = releaseLease.Run(ctx, c.o.Client, []string{c.leaseKey(p.slots[0])}, c.token).Err()
	}
	for _, p := range free {
		if len(mine) < share && c.holdLease(ctx, p.slots[0]) {
			mine = append(mine, p)
		}
	}
	return mine
}

// keepers records this proxy among the live ones and returns how many there are (0 on error).
func (c *Cluster) keepers(ctx context.Context) int {
	now := time.Now().UnixMilli()
	key := c.keepersKey()
	pipe := c.o.Client.TxPipeline()
	pipe.HSet(ctx, key, c.token, now+c.leaseMS)
	all := pipe.HGetAll(ctx, key)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0
	}
	n := 0
	for tok, v := range all.Val() {
		switch until, _ := strconv.ParseInt(v, 10, 64); {
		case until > now:
			n++
		case until < now-time.Minute.Milliseconds(): // long gone
			c.o.Client.HDel(ctx, key, tok)
		}
	}
	return n
}

func (c *Cluster) keepersKey() string {
	return c.o.Schema.Prefix + "{" + cluster.SlotTag(0) + "}:keepers"
}

// release gives up the leases of held on shutdown, so other proxies take those primaries over
// at once instead of when the leases expire.
func (c *Cluster) release(held []primary) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, p := range held {
		_ = releaseLease.Run(ctx, c.o.Client, []string{c.leaseKey(p.slots[0])}, c.token).Err()
	}
	_ = c.o.Client.HDel(ctx, c.keepersKey(), c.token).Err()
}

func (c *Cluster) leaseKey(first int) string {
	return c.o.Schema.Prefix + "{" + cluster.SlotTag(first) + "}:reaper-lease"
}

// subscribe keeps one keyevent subscription on a node whose lease this proxy holds.
func (c *Cluster) subscribe(ctx context.Context, addr string, node *redis.Client, events chan<- string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.subs[addr]; ok {
		return
	}
	sctx, cancel := context.WithCancel(ctx)
	c.subs[addr] = cancel
	c.bg.Go(func() { c.listen(sctx, node, events) })
}

// listen relays one node's expired and evicted session keys to events, and makes sure the node
// publishes them (notify-keyspace-events) on every (re)subscription.
func (c *Cluster) listen(ctx context.Context, node *redis.Client, events chan<- string) {
	ps := node.Subscribe(ctx, "__keyevent@0__:expired", "__keyevent@0__:evicted")
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	defer ps.Close()
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Count == 1 {
				c.ensureNotifications(ctx, node)
			}
		case *redis.Message:
			if c.o.Schema.Match([]byte(m.Payload)) >= 0 {
				select {
				case events <- m.Payload:
				default: // a backlog: the sweep cleans it from the ledger
				}
			}
		}
	}
}

func (c *Cluster) ensureNotifications(ctx context.Context, node *redis.Client) {
	cur, err := node.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err == nil {
		flags := cur["notify-keyspace-events"]
		if want := missingFlags(flags); want != "" {
			err = node.ConfigSet(ctx, "notify-keyspace-events", flags+want).Err()
		}
	}
	if err != nil {
		c.log.Warn("cannot enable keyspace notifications on a primary; its expiry cleanup runs on the ledger sweep alone", "node", node.Options().Addr, "err", err)
	}
}

// eventLoop cleans the sessions named by events in batches: one reap script per slot for what
// arrived meanwhile, all in one pipeline.
func (c *Cluster) eventLoop(ctx context.Context, events <-chan string) {
	bySlot := map[int][]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case k := <-events:
			bySlot[cluster.Slot([]byte(k))] = append(bySlot[cluster.Slot([]byte(k))], k)
		}
	more:
		for n := 1; n < c.o.Batch; n++ {
			select {
			case k := <-events:
				bySlot[cluster.Slot([]byte(k))] = append(bySlot[cluster.Slot([]byte(k))], k)
			default:
				break more
			}
		}
		calls := make([]call, 0, len(bySlot))
		slots := make([]int, 0, len(bySlot))
		for s, ks := range bySlot {
			book := c.book(s)
			calls = append(calls, call{c.reap, append(ks, book[:]...), []any{"keys"}})
			slots = append(slots, s)
			delete(bySlot, s)
		}
		now := time.Now()
		for i, r := range c.run(ctx, calls) {
			if res, ok := int64s(r); ok {
				c.m.scripts.WithLabelValues(pathEvent).Inc()
				c.account(res, pathEvent, now)
				if len(res) > 2 {
					c.Dirty(slots[i])
				}
			} else if r.err != nil {
				c.log.Debug("cluster reaper event", "slot", slots[i], "err", r.err)
			}
		}
	}
}
