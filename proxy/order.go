package proxy

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// orderGate hands client batches upstream in the order their bytes reached the host. Each
// client has its own goroutine, and Go's netpoller wakes the goroutines of clients whose bytes
// came in together in reverse order, so without the gate a command written to the proxy after
// another client's would reach Redis first (measured: 20-25 of 30 runs of a blocking
// XREADGROUP overtaken by a DEL sent after it). A batch registers with the kernel's receive
// time of its bytes as soon as its read completes (arrived), yields once so the goroutines
// woken with it read theirs too, then waits until no earlier batch is still on its way
// upstream and no other client's bytes that arrived just before its own are still unread (the
// probe: a goroutine the runtime has not run yet). It leaves once its first command is handed
// to an upstream connection (written, or queued in order behind what is outstanding there); on
// the shared path it goes to the connection Redis served least recently (pool.leastRecent).
// The wait is bounded by orderWait: a batch that takes long to reach upstream (a dial to a
// dead Redis) holds nobody for longer. The yields and waits cost CPU per request under load:
// Options.Ordering says when the gate is on.
type orderGate struct {
	// window and batches measure the batch rate for OrderAuto; quiet is whether it was at most
	// orderAutoRate over the last full window (reads keep receive times only then).
	window  atomic.Int64 // start of the current window, unix ns
	batches atomic.Int64 // batches in it
	quiet   atomic.Bool

	// probe sees client bytes that arrived but that no goroutine has read yet (nil: off).
	probe *resp.Prober

	mu      sync.Mutex
	pending []gateEntry     // batches read (or entered) and not yet handed upstream
	waiting []chan struct{} // batches behind an earlier one: leave wakes them
	probing []chan struct{} // batches behind unread bytes: arrived wakes them
}

type gateEntry struct {
	at int64 // receive time, unix ns
	c  *client
}

// Ordering says when the order gate is on.
type Ordering uint8

const (
	// OrderNone keeps each client's own order only, as most proxies do.
	OrderNone Ordering = iota
	// OrderArrival hands every batch upstream in the order the batches reached the proxy.
	OrderArrival
	// OrderAuto does so while the proxy is lightly loaded (at most orderAutoRate batches a
	// second over the last orderWindow), where the gate's CPU is spare and two clients'
	// commands microseconds apart are the ones that could be seen out of order; under load it
	// is off, and throughput is what it would be without it.
	OrderAuto
)

// orderAutoRate and orderWindow: OrderAuto's threshold (batches per second) and how often it
// is judged.
const (
	orderAutoRate   = 2000
	orderWindow     = 100 * time.Millisecond
	orderClockEvery = 16
	// orderBurst is how many batches above orderAutoRate's pace so far in a window turn the
	// gate off before the window ends.
	orderBurst = 20
)

// on reports whether the gate applies to the next batch, and counts it.
func (g *orderGate) on(mode Ordering) bool {
	switch mode {
	case OrderArrival:
		return true
	case OrderAuto:
	default:
		return false
	}
	n := g.batches.Add(1)
	if n%orderClockEvery != 0 && !g.quiet.Load() {
		// Under load the gate is off, and one clock read in orderClockEvery batches is enough
		// to see the load go (a clock read here is 50-60 ns, 1.5% of the proxy's CPU at
		// -P 1): the gate comes back that many batches and one window later at most.
		return false
	}
	now := time.Now().UnixNano()
	if start := g.window.Load(); now-start >= int64(orderWindow) && g.window.CompareAndSwap(start, now) {
		rate := float64(n) / (float64(now-start) / float64(time.Second))
		g.quiet.Store(rate <= orderAutoRate)
		g.batches.Store(0)
	} else if n > orderAutoRate*(now-start)/int64(time.Second)+orderBurst {
		// A burst: off at once, not at the end of the window. 10,000 clients connecting
		// together all entered the gate and yielded to each other; a PING waited 1.1 s. Judged
		// by the rate so far in the window: at its end, 200 newcomers' first batches (and
		// their dials) would still have held the PINGs of clients already there.
		g.quiet.Store(false)
	}
	return g.quiet.Load()
}

// orderWait bounds how long a batch waits for earlier ones: far above a hand-off (microseconds)
// or a dial to a live Redis (a fraction of a millisecond).
const orderWait = 10 * time.Millisecond

// orderFresh: a batch read this soon after its bytes arrived may have been woken together with
// earlier ones not yet run (the netpoller's reverse order), so it yields once to let them
// register. A batch read later than that has waited in the run queue behind the goroutines
// woken before it; under load that is every batch, and the yield would cost throughput. The
// probe for unread earlier bytes runs either way: on a busy host a goroutine can be read
// 300 µs after its bytes came while an earlier client's goroutine has not run at all (seen: 1
// run in 300 of TestOrderAcrossConnections before the probe covered late batches).
const orderFresh = 250 * time.Microsecond

// orderSpins is how often a batch behind an earlier one yields to it before it parks: the
// earlier one is usually runnable and hands off within a yield or two.
const orderSpins = 4

// orderRecent is how far back a batch looks for other clients' bytes that arrived before its
// own and are still unread: a goroutine woken with it but not run yet is microseconds behind,
// one that has not read for longer is busy with an earlier batch of its own (or blocked), and
// waiting for it would only add latency.
const orderRecent = 2 * time.Millisecond

// arrived registers c's batch, whose last bytes the kernel received at at, as soon as its read
// returns, before the parse: between the read and enter a later batch must already see it (a
// goroutine descheduled there let a later batch go first, about once in 500 runs of
// TestOrderAcrossConnections under CI load). Called on c's reader goroutine
// (resp.Conn.OnBatch); resp.Conn.OnPartial withdraws it when the bytes are no whole batch.
func (g *orderGate) arrived(c *client, at int64) {
	if c.gated {
		return
	}
	c.gated = true
	g.mu.Lock()
	g.pending = append(g.pending, gateEntry{at, c})
	g.probing = wake(g.probing) // a new batch frees nobody, but answers a probe
	g.mu.Unlock()
}

// enter waits until c's batch, received at at, is the earliest one not handed upstream yet,
// and no other client's bytes that arrived in the orderRecent before it are still unread.
func (g *orderGate) enter(c *client, at int64) {
	g.arrived(c, at) // if its read did not register it (bytes left over from an earlier read)
	fresh := time.Now().UnixNano()-at < int64(orderFresh)
	if fresh {
		runtime.Gosched()
	}
	var timer *time.Timer
	for spins := 0; ; spins++ {
		g.mu.Lock()
		first := g.earliest(at)
		g.mu.Unlock()
		if first && !g.probe.Earlier(c.conn, at-int64(orderRecent), at) {
			return
		}
		if spins < orderSpins {
			runtime.Gosched()
			continue
		}
		g.mu.Lock()
		if g.earliest(at) != first { // a batch came or left meanwhile: look again
			g.mu.Unlock()
			continue
		}
		if first {
			g.probing = append(g.probing, c.gateCh)
		} else {
			g.waiting = append(g.waiting, c.gateCh)
		}
		g.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(orderWait)
			defer timer.Stop()
		}
		select {
		case <-c.gateCh:
		case <-timer.C:
			return
		}
	}
}

// earliest reports whether no pending batch was received before at.
func (g *orderGate) earliest(at int64) bool {
	for _, e := range g.pending {
		if e.at < at {
			return false
		}
	}
	return true
}

// leave removes c's batch and wakes the waiting ones to look again.
func (g *orderGate) leave(c *client) {
	g.mu.Lock()
	for i, e := range g.pending {
		if e.c == c {
			last := len(g.pending) - 1
			g.pending[i] = g.pending[last]
			g.pending[last] = gateEntry{}
			g.pending = g.pending[:last]
			break
		}
	}
	g.waiting = wake(g.waiting)
	g.mu.Unlock()
}

// wake makes every batch parked on chs look again and returns chs emptied. Called with g.mu held.
func wake(chs []chan struct{}) []chan struct{} {
	for _, ch := range chs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	clear(chs)
	return chs[:0]
}

// handedOff is called once the batch's first command is on its way upstream (and at the end
// of the batch): the gate lets later batches go.
func (c *client) handedOff() {
	if c.gated {
		c.gated = false
		c.s.order.leave(c)
	}
}
