package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
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
	ctx  context.Context // bounds the spare connections' dials
	wg   sync.WaitGroup  // spare dials in flight

	mu     sync.RWMutex
	byKey  map[poolKey]*pool
	closed bool
}

func newPools(ctx context.Context, d *dialer, size int, m *metrics) *pools {
	return &pools{d: d, size: size, m: m, ctx: ctx, byKey: make(map[poolKey]*pool)}
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
}

// spareConn is an idle upstream connection in its pool's state, not yet anyone's.
type spareConn struct {
	nc net.Conn
	br *bufio.Reader
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
	// An idle connection has nothing to read: a read that does not time out at once found
	// EOF (Redis' idle timeout, CLIENT KILL) or bytes nobody asked for.
	_ = sp.nc.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := sp.br.Peek(1)
	_ = sp.nc.SetReadDeadline(time.Time{})
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		sp.nc.Close()
		return nil, nil
	}
	return sp.nc, sp.br
}

// refill dials a spare connection in the background unless one is there or on its way.
func (p *pool) refill() {
	if p.spare.Load() != nil || !p.refilling.CompareAndSwap(false, true) {
		return
	}
	ps := p.p
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		defer p.refilling.Store(false)
		ps.m.upstreamDials.Inc()
		nc, br, err := ps.d.dial(ps.ctx, p.key, "", false)
		if err != nil {
			ps.m.upstreamDialErrors.Inc()
			return // the next take dials for itself and tries again
		}
		ps.mu.RLock()
		live := !ps.closed && ps.byKey[p.key] == p
		if live {
			if old := p.spare.Swap(&spareConn{nc: nc, br: br}); old != nil {
				old.nc.Close()
			}
		}
		ps.mu.RUnlock()
		if !live {
			nc.Close()
		}
	}()
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
		if !transient(err) { // a busy script may be killed any moment: ask again next time
			sl.lastErr, sl.lastFail = err, time.Now()
		}
		return nil, err
	}
	sl.lastErr = nil
	u := newSharedConn(nc, br, p.p.m)
	sl.cur.Store(u)
	return u, nil
}

func (p *pool) close() {
	if sp := p.spare.Swap(nil); sp != nil {
		sp.nc.Close()
	}
	for i := range p.slots {
		if u := p.slots[i].cur.Load(); u != nil {
			u.close()
		}
	}
}
