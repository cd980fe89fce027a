package proxy

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// redialBackoff is how long a failed dial is remembered: clients arriving meanwhile get the same
// error at once instead of each waiting for its own dial timeout against a dead upstream.
const redialBackoff = 100 * time.Millisecond

// poolKey names the upstream connection state a shared connection is in.
type poolKey struct {
	id    identity
	db    int
	resp3 bool // HELLO 3: replies in RESP3
}

// pools holds the shared connections, a small fixed number per (identity, db).
type pools struct {
	d    *dialer
	size int
	m    *metrics

	mu     sync.RWMutex
	byKey  map[poolKey]*pool
	closed bool
}

func newPools(d *dialer, size int, m *metrics) *pools {
	return &pools{d: d, size: size, m: m, byKey: make(map[poolKey]*pool)}
}

// pool is the set of shared connections for one key; a client always uses the same slot.
type pool struct {
	key   poolKey
	p     *pools
	slots []slot
}

type slot struct {
	cur atomic.Pointer[sharedConn]

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
	defer ps.mu.Unlock()
	if ps.closed {
		return nil, errShuttingDown
	}
	if p = ps.byKey[key]; p == nil {
		p = &pool{key: key, p: ps, slots: make([]slot, ps.size)}
		ps.byKey[key] = p
	}
	return p, nil
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
}

var errShuttingDown = errors.New("proxy is shutting down")

// conn returns the live shared connection of slot n, dialing it if needed.
func (p *pool) conn(ctx context.Context, n uint64) (*sharedConn, error) {
	sl := &p.slots[n%uint64(len(p.slots))]
	if u := sl.cur.Load(); u != nil && !u.dead.Load() {
		return u, nil
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if u := sl.cur.Load(); u != nil && !u.dead.Load() {
		return u, nil
	}
	if sl.lastErr != nil && time.Since(sl.lastFail) < redialBackoff {
		return nil, sl.lastErr
	}
	p.p.m.upstreamDials.Inc()
	nc, br, err := p.p.d.dial(ctx, p.key, "", true)
	if err != nil {
		p.p.m.upstreamDialErrors.Inc()
		sl.lastErr, sl.lastFail = err, time.Now()
		return nil, err
	}
	sl.lastErr = nil
	u := newSharedConn(nc, br, p.p.m)
	sl.cur.Store(u)
	return u, nil
}

func (p *pool) close() {
	for i := range p.slots {
		if u := p.slots[i].cur.Load(); u != nil {
			u.close()
		}
	}
}
