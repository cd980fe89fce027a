package proxy

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// orderGate hands client batches upstream in the order their bytes reached the host. Each
// client has its own goroutine, and Go's netpoller wakes the goroutines of clients whose bytes
// came in together in reverse order, so without the gate a command written to the proxy after
// another client's would reach Redis first (measured: 20-25 of 30 runs of a blocking
// XREADGROUP overtaken by a DEL sent after it). A batch enters with the kernel's receive time
// of its bytes, yields once so the goroutines woken with it read theirs too, then waits until
// no earlier batch is still on its way upstream; it leaves once its first command is handed
// to an upstream connection (written, or queued in order behind what is outstanding there).
// The wait is bounded by orderWait: a batch that takes long to reach upstream (a dial to a
// dead Redis) holds nobody for longer. The yields and waits cost about a fifth more CPU per
// request under load: Options.Ordering says when the gate is on.
type orderGate struct {
	// window and batches measure the batch rate for OrderAuto; quiet is whether it was at most
	// orderAutoRate over the last full window (reads keep receive times only then).
	window  atomic.Int64 // start of the current window, unix ns
	batches atomic.Int64 // batches in it
	quiet   atomic.Bool

	mu      sync.Mutex
	pending []gateEntry // batches entered and not yet handed upstream
	waiting []chan struct{}
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
	orderAutoRate = 2000
	orderWindow   = 100 * time.Millisecond
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
	now := time.Now().UnixNano()
	n := g.batches.Add(1)
	if start := g.window.Load(); now-start >= int64(orderWindow) && g.window.CompareAndSwap(start, now) {
		rate := float64(n) / (float64(now-start) / float64(time.Second))
		g.quiet.Store(rate <= orderAutoRate)
		g.batches.Store(0)
	}
	return g.quiet.Load()
}

// orderWait bounds how long a batch waits for earlier ones: far above a hand-off (microseconds)
// or a dial to a live Redis (a fraction of a millisecond).
const orderWait = 10 * time.Millisecond

// orderFresh: a batch read this soon after its bytes arrived may have been woken together with
// earlier ones not yet run (the netpoller's reverse order), so it yields once to let them
// register. A batch read later than that has waited in the run queue behind the goroutines
// woken before it; under load that is every batch, and the yield would cost throughput.
const orderFresh = 250 * time.Microsecond

// orderSpins is how often a batch behind an earlier one yields to it before it parks: the
// earlier one is usually runnable and hands off within a yield or two.
const orderSpins = 4

// enter waits until c's batch, received at at, is the earliest one not handed upstream yet.
func (g *orderGate) enter(c *client, at int64) {
	g.mu.Lock()
	g.pending = append(g.pending, gateEntry{at, c})
	g.mu.Unlock()
	c.gated = true
	if time.Now().UnixNano()-at < int64(orderFresh) {
		runtime.Gosched()
	}
	var timer *time.Timer
	for spins := 0; ; spins++ {
		g.mu.Lock()
		if g.earliest(at) {
			g.mu.Unlock()
			return
		}
		if spins < orderSpins {
			g.mu.Unlock()
			runtime.Gosched()
			continue
		}
		g.waiting = append(g.waiting, c.gateCh)
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
	for _, ch := range g.waiting {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	clear(g.waiting)
	g.waiting = g.waiting[:0]
	g.mu.Unlock()
}

// handedOff is called once the batch's first command is on its way upstream (and at the end
// of the batch): the gate lets later batches go.
func (c *client) handedOff() {
	if c.gated {
		c.gated = false
		c.s.order.leave(c)
	}
}
