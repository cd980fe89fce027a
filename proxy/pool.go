package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// transientBackoff is how long a dial that Redis refused only for now (-BUSY, -LOADING) is
// remembered: clients meanwhile get the same answer without a connect each.
const transientBackoff = 10 * time.Millisecond

// redialBackoff is how long a failed dial is remembered: clients arriving meanwhile get the same
// error at once instead of each waiting for its own dial timeout against a dead upstream.
const redialBackoff = 100 * time.Millisecond

// poolKey names the upstream connection state a shared connection is in.
type poolKey struct {
	id    identity
	db    int
	resp3 bool   // HELLO 3: replies in RESP3
	node  string // cluster mode: the node (host:port); "" is the dialer's address
}

// pools holds the shared connections, a small fixed number per (identity, db).
type pools struct {
	d    *dialer
	size int
	m    *metrics
	ctx  context.Context // bounds the spare connections' dials
	wg   sync.WaitGroup  // spare dials in flight, watchBusy
	// busy is Redis' busy-reply-threshold in ns (watchBusy): how long it lets a script run
	// before it answers others -BUSY.
	busy atomic.Int64
	// timeout bounds a new shared connection's wait for replies (Limits.CommandTimeout, ns).
	timeout atomic.Int64
	// stale is how long a connection may sit idle before Redis' own `timeout` may close it
	// (watchBusy; 0: Redis has none): such a connection is replaced before use rather than
	// risk a command written just as Redis closes it.
	stale atomic.Int64

	mu     sync.RWMutex
	byKey  map[poolKey]*pool
	closed bool
}

func newPools(ctx context.Context, d *dialer, size int, m *metrics) *pools {
	ps := &pools{d: d, size: size, m: m, ctx: ctx, byKey: make(map[poolKey]*pool)}
	ps.busy.Store(int64(defaultBusyThreshold))
	return ps
}

// defaultBusyThreshold is Redis' default busy-reply-threshold, used until Redis says otherwise
// (CONFIG may be denied: then it stays).
const defaultBusyThreshold = 5 * time.Second

// busyRefresh is how often watchBusy asks again (an admin may change the threshold).
const busyRefresh = 30 * time.Second

// watchBusy keeps ps.busy at Redis' busy-reply-threshold until ctx ends.
func (ps *pools) watchBusy(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		reply, err := ps.d.oneShot(ctx, poolKey{id: ps.d.base}, resp.AppendCommand(nil, "CONFIG", "GET", "busy-reply-threshold"), 1, nil)
		if err == nil {
			if ms, ok := lastInt(reply); ok && ms >= 0 {
				ps.busy.Store(int64(time.Duration(ms) * time.Millisecond))
			}
		}
		reply, err = ps.d.oneShot(ctx, poolKey{id: ps.d.base}, resp.AppendCommand(nil, "CONFIG", "GET", "timeout"), 1, nil)
		if err == nil {
			if sec, ok := lastInt(reply); ok && sec >= 0 {
				ps.stale.Store(int64(staleAfter(time.Duration(sec) * time.Second)))
			}
		}
		t.Reset(busyRefresh)
	}
}

// staleAfter is how long a connection may be idle when Redis' `timeout` is t (0: none). Redis
// closes a client once the whole seconds between its last command and now exceed t, which
// can be as soon as t after it; its cron looks every 100 ms or so.
func staleAfter(t time.Duration) time.Duration {
	if t <= 0 {
		return 0
	}
	return max(t-500*time.Millisecond, 100*time.Millisecond)
}

// lastInt parses the last line of a raw reply as an integer (CONFIG GET's value).
func lastInt(reply []byte) (int64, bool) {
	lines := bytes.Split(bytes.TrimSuffix(reply, []byte("\r\n")), []byte("\r\n"))
	return resp.ParseInt(lines[len(lines)-1])
}

// pool is the set of shared connections for one key; a client always uses the same slot.
// It also keeps one spare connection in the key's state, ready for the next client that needs
// a dedicated connection: taking it costs no dial, so a command that moves a client to its own
// connection (a blocking read, SUBSCRIBE, MULTI) reaches Redis as soon as the client's next
// command on a shared one would, not a dial later, when other clients' commands sent after it
// may have overtaken it. And it is already in the key's DB: while a script is busy Redis
// refuses SELECT, but serves MULTI.
type pool struct {
	key   poolKey
	p     *pools
	slots []slot

	spare     atomic.Pointer[spareConn]
	refilling atomic.Bool

	retiredMu sync.Mutex
	retired   []*sharedConn // replaced behind a busy script, still waiting for its reply
}

// spareConn is an idle upstream connection in its pool's state, not yet anyone's.
type spareConn struct {
	nc  net.Conn
	br  *bufio.Reader
	gen uint64 // the dialer's gen when it was dialed
	at  time.Time
}

type slot struct {
	cur     atomic.Pointer[sharedConn]
	warming atomic.Bool // a background dial for leastRecent is on its way

	mu       sync.Mutex // serializes dials of this slot
	lastErr  error
	lastFail time.Time
}

// get returns the pool for key, creating it on first use.
func (ps *pools) get(key poolKey) (*pool, error) {
	ps.mu.RLock()
	p := ps.byKey[key]
	ps.mu.RUnlock()
	if p != nil {
		return p, nil
	}
	ps.mu.Lock()
	if ps.closed {
		ps.mu.Unlock()
		return nil, errShuttingDown
	}
	created := false
	if p = ps.byKey[key]; p == nil {
		p, created = &pool{key: key, p: ps, slots: make([]slot, ps.size)}, true
		ps.byKey[key] = p
	}
	ps.mu.Unlock()
	if created && key.node == "" { // cluster nodes' pools serve the shared path only (for now)
		p.refill()
	}
	return p, nil
}

// takeSpare hands out the spare connection if it is still open, and dials the next one.
func (p *pool) takeSpare() (net.Conn, *bufio.Reader) {
	sp := p.spare.Swap(nil)
	p.refill()
	if sp == nil {
		return nil, nil
	}
	if sp.gen != p.p.d.gen.Load() || !idleOpen(sp.nc) || p.p.isStale(sp.at.UnixNano()) {
		// dialed to a former upstream, dropped, or idle for as long as Redis lets it
		sp.nc.Close()
		return nil, nil
	}
	return sp.nc, sp.br
}

// refill dials a spare connection in the background unless one is there or on its way.
func (p *pool) refill() {
	if p.spare.Load() != nil {
		return
	}
	ps := p.p
	ps.background(&p.refilling, func() {
		ps.m.upstreamDials.Inc()
		gen := ps.d.gen.Load()
		nc, br, err := ps.d.dial(ps.ctx, p.key, "", false)
		if err != nil {
			ps.m.upstreamDialErrors.Inc()
			return // the next take dials for itself and tries again
		}
		ps.mu.RLock()
		live := !ps.closed && ps.byKey[p.key] == p
		if live {
			if old := p.spare.Swap(&spareConn{nc: nc, br: br, gen: gen, at: time.Now()}); old != nil {
				old.nc.Close()
			}
		}
		ps.mu.RUnlock()
		if !live {
			nc.Close()
		}
	})
}

// closeConns closes every upstream connection of every pool (shared, spare, retired); the pools
// stay, and dial again on their next use.
func (ps *pools) closeConns() {
	ps.mu.RLock()
	all := slices.Collect(maps.Values(ps.byKey))
	ps.mu.RUnlock()
	for _, p := range all {
		p.close()
	}
}

// closeAll closes every shared connection; later gets fail.
func (ps *pools) closeAll() {
	ps.mu.Lock()
	ps.closed = true
	all := ps.byKey
	ps.byKey = map[poolKey]*pool{}
	ps.mu.Unlock()
	for _, p := range all {
		p.close()
	}
	ps.wg.Wait()
}

var errShuttingDown = errors.New("proxy is shutting down")

// conn returns the live shared connection of slot n, dialing it if needed.
func (p *pool) conn(ctx context.Context, n uint64) (*sharedConn, error) {
	sl := &p.slots[n%uint64(len(p.slots))]
	gen := p.p.d.gen.Load()
	if u := sl.cur.Load(); u != nil && !u.dead.Load() && u.gen == gen && !p.p.idleTooLong(u) {
		return u, nil
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if u := sl.cur.Load(); u != nil && !u.dead.Load() {
		switch {
		case u.gen != gen:
			u.close() // dialed to the former upstream (a failover): it gets nothing more
		case p.p.idleTooLong(u):
			u.retire() // Redis' timeout may close it any moment: nothing new goes there
		default:
			return u, nil
		}
	}
	if sl.lastErr != nil && time.Since(sl.lastFail) < redialBackoff {
		return nil, sl.lastErr
	}
	if u := sl.cur.Load(); u != nil && u.isRetired() {
		p.keepRetired(u)
	}
	p.p.m.upstreamDials.Inc()
	nc, br, err := p.p.d.dial(ctx, p.key, "", true)
	if err == nil && p.p.d.gen.Load() != gen {
		// SetUpstream ran during the dial, which may have gone to the former address: once
		// more, to the new one.
		nc.Close()
		gen = p.p.d.gen.Load()
		p.p.m.upstreamDials.Inc()
		if nc, br, err = p.p.d.dial(ctx, p.key, "", true); err == nil && p.p.d.gen.Load() != gen {
			nc.Close()
			err = errUpstreamChanged
		}
	}
	if err != nil {
		p.p.m.upstreamDialErrors.Inc()
		sl.lastErr, sl.lastFail = err, time.Now()
		if transient(err) { // a busy script may be killed any moment: ask again soon
			sl.lastFail = sl.lastFail.Add(transientBackoff - redialBackoff)
		}
		return nil, err
	}
	sl.lastErr = nil
	u := newSharedConn(nc, br, p.p.m, &p.p.busy, gen, time.Duration(p.p.timeout.Load()))
	sl.cur.Store(u)
	return u, nil
}

// leastRecent returns, of the pool's live shared connections, one with nothing outstanding
// that Redis answered longest ago (slot n's is dialed if need be; a second one too when no other
// is live, and further slots in the background). A batch in the order gate goes
// there: Redis reads first the connections it served in its previous event-loop turn (they stay
// at the head of its epoll ready list until its next wait), so a command on the connection that
// just carried another client's command can overtake one written before it on another
// connection (bench/orderprobe, "same": about 1 run in 200 on Redis alone, more when Redis is
// descheduled between its reply and its next wait). Any slot will do: a client has nothing
// outstanding between batches on the shared path.
func (p *pool) leastRecent(ctx context.Context, n uint64) (*sharedConn, error) {
	own, err := p.conn(ctx, n)
	if err != nil {
		return nil, err
	}
	best, alone, missing := own, true, -1
	for i := range p.slots {
		u := p.slots[i].cur.Load()
		if u == nil || u.dead.Load() || u.gen != own.gen || p.p.idleTooLong(u) {
			missing = i // (a stale one is replaced by the dial)
			continue
		}
		if u != own {
			alone = false
		}
		if better(u, best) {
			best = u
		}
	}
	switch {
	case missing < 0:
	case alone: // no other connection to go to: dial one now (once per pool, or after a loss)
		if u, err := p.conn(ctx, uint64(missing)); err == nil && u.gen == own.gen && better(u, best) {
			best = u
		}
	default:
		p.warm(missing)
	}
	return best, nil
}

// pick returns slot n's connection, or, when that one has a request outstanding, one of the
// pool's live connections that has none: a client's command then does not wait on a shared
// connection behind another client's large reply or slow command while another is free (a PING
// waited 286 ms behind 500 MB of GET replies). Slots are not dialed for it (leastRecent and the
// clients whose slot it is do that).
func (p *pool) pick(ctx context.Context, n uint64) (*sharedConn, error) {
	own, err := p.conn(ctx, n)
	if err != nil || own.inflight.Load() == 0 {
		return own, err
	}
	for i := range p.slots {
		if u := p.slots[i].cur.Load(); u != nil && u.inflight.Load() == 0 && !u.dead.Load() && u.gen == own.gen && !p.p.idleTooLong(u) {
			return u, nil
		}
	}
	return own, nil
}

// idleTooLong reports whether u has nothing outstanding and has been idle for as long as
// Redis' timeout lets a connection be. Free when Redis has no timeout (its default).
func (ps *pools) idleTooLong(u *sharedConn) bool {
	return ps.stale.Load() > 0 && u.inflight.Load() == 0 && ps.isStale(u.lastDone.Load())
}

// isStale reports whether a connection idle since the unix-ns time may be closed by Redis'
// timeout any moment.
func (ps *pools) isStale(since int64) bool {
	st := ps.stale.Load()
	return st > 0 && time.Now().UnixNano()-since > st
}

// better reports whether u is a better pick than v for a gated batch: idle over busy, then
// answered longer ago.
func better(u, v *sharedConn) bool {
	ui, vi := u.inflight.Load() == 0, v.inflight.Load() == 0
	if ui != vi {
		return ui
	}
	return u.lastDone.Load() < v.lastDone.Load()
}

// warm dials slot i in the background, once at a time.
func (p *pool) warm(i int) {
	p.p.background(&p.slots[i].warming, func() { _, _ = p.conn(p.p.ctx, uint64(i)) })
}

// warm dials the shared connections of key's pool (its spare comes with the pool), one after
// the other; false if one did not dial (it is left to the first client that needs it).
func (ps *pools) warm(ctx context.Context, key poolKey) bool {
	p, err := ps.get(key)
	if err != nil {
		return false
	}
	for i := range p.slots {
		if _, err := p.conn(ctx, uint64(i)); err != nil {
			return false
		}
	}
	return true
}

// background runs f on a goroutine of its own unless one guarded by busy is still running or
// the pools are closed; closeAll waits for it.
func (ps *pools) background(busy *atomic.Bool, f func()) {
	if !busy.CompareAndSwap(false, true) {
		return
	}
	ps.mu.RLock() // closeAll sets closed under the write lock before it waits for wg
	if ps.closed {
		ps.mu.RUnlock()
		busy.Store(false)
		return
	}
	ps.wg.Add(1)
	ps.mu.RUnlock()
	go func() {
		defer ps.wg.Done()
		defer busy.Store(false)
		f()
	}()
}

// keepRetired remembers a retired connection until it closes itself, so that a shutdown
// meanwhile closes it too.
func (p *pool) keepRetired(u *sharedConn) {
	p.retiredMu.Lock()
	defer p.retiredMu.Unlock()
	p.retired = slices.DeleteFunc(p.retired, func(r *sharedConn) bool { return r.isClosed() })
	p.retired = append(p.retired, u)
}

func (p *pool) close() {
	if sp := p.spare.Swap(nil); sp != nil {
		sp.nc.Close()
	}
	p.retiredMu.Lock()
	for _, u := range p.retired {
		u.close()
	}
	p.retired = nil
	p.retiredMu.Unlock()
	for i := range p.slots {
		if u := p.slots[i].cur.Load(); u != nil {
			u.close()
		}
	}
}
