package proxy

import (
	"testing"
	"time"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestOrderGate: a batch waits in the gate until every batch received before it that has
// entered has been handed upstream, and never longer than orderWait. (That the goroutines woken
// together in reverse order enter in time is the end-to-end TestOrderAcrossConnections.)
func TestOrderGate(t *testing.T) {
	s := &Server{}
	newC := func(id uint64) *client { return &client{s: s, id: id, gateCh: make(chan struct{}, 1)} }
	late, early := newC(1), newC(2)
	passed := make(chan struct{})
	s.order.enter(early, 100) // received first, entered first: passes at once
	go func() {
		s.order.enter(late, 200)
		close(passed)
	}()
	select {
	case <-passed:
		t.Fatal("a later batch passed while an earlier one was still on its way upstream")
	case <-time.After(orderWait / 5):
	}
	early.handedOff()
	select {
	case <-passed:
	case <-time.After(time.Second):
		t.Fatal("the later batch still waits after the earlier one was handed upstream")
	}
	late.handedOff()
	if len(s.order.pending) != 0 {
		t.Fatalf("pending after both left: %v", s.order.pending)
	}

	// An earlier batch that never hands off holds a later one for orderWait at most.
	stuck, next := newC(5), newC(6)
	s.order.enter(stuck, 400)
	start := time.Now()
	s.order.enter(next, 500)
	if waited := time.Since(start); waited < orderWait || waited > orderWait+time.Second {
		t.Errorf("waited %v behind a batch that never left, want about %v", waited, orderWait)
	}
	next.handedOff()
	stuck.handedOff()
}

// TestOrderAuto: OrderAuto keeps the gate on while batches come at most orderAutoRate a
// second, off above it, and on again when the load goes.
func TestOrderAuto(t *testing.T) {
	var g orderGate
	g.quiet.Store(true) // as New starts it
	if !g.on(OrderAuto) {
		t.Fatal("off on an idle proxy")
	}
	if g.on(OrderNone) || !g.on(OrderArrival) {
		t.Fatal("OrderNone must be off and OrderArrival on, always")
	}
	for range 10 * orderAutoRate * int(orderWindow) / int(time.Second) { // ten times the rate
		g.on(OrderAuto)
	}
	time.Sleep(orderWindow)
	if g.on(OrderAuto) {
		t.Error("still on after a window at ten times the rate")
	}
	// Under load the clock is read once in orderClockEvery batches: the window that held the
	// burst closes at the first read after it, the quiet one after it at the next.
	for range 2 {
		time.Sleep(orderWindow + 10*time.Millisecond)
		for range orderClockEvery {
			g.on(OrderAuto)
		}
	}
	if !g.on(OrderAuto) {
		t.Error("still off after a quiet window")
	}
}

// TestOrderAutoBurst: a burst turns the gate off within orderBurst batches or so, not at the
// end of the window (a storm of connections would hold established clients behind every
// newcomer's first batch until then), while a pace under orderAutoRate keeps it on.
func TestOrderAutoBurst(t *testing.T) {
	var g orderGate
	g.quiet.Store(true)
	g.on(OrderAuto) // opens a window
	on := 0
	for range 2 * orderBurst {
		if g.on(OrderAuto) {
			on++
		}
	}
	if g.on(OrderAuto) || on > orderBurst+1 {
		t.Fatalf("a burst of %d batches: gate on for %d of them, and after", 2*orderBurst, on)
	}
	// Under the rate: one batch per 2/orderAutoRate seconds (half the rate) stays on.
	var h orderGate
	h.quiet.Store(true)
	step := 2 * time.Second / orderAutoRate
	for i := range 50 {
		if !h.on(OrderAuto) {
			t.Fatalf("batch %d at half the rate: gate off", i)
		}
		time.Sleep(step)
	}
}

// TestLeastRecent: a gated batch goes on the pool's connection Redis answered longest ago, and
// the pool's other slots are dialed in the background for it, so that it does not follow
// another client's command on the connection Redis served last (TestOrderAcrossConnections,
// end to end).
func TestLeastRecent(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up)
	p, err := s.pools.get(poolKey{id: s.anonID})
	if err != nil {
		t.Fatal(err)
	}
	ping := func(u *sharedConn) {
		t.Helper()
		req := &request{done: newDone(), cmds: []redcon.Command{{Raw: []byte("*1\r\n$4\r\nPING\r\n"), Args: [][]byte{[]byte("PING")}}}}
		if err := u.do(req); err != nil || req.err != nil {
			t.Fatalf("PING: %v %v", err, req.err)
		}
	}
	first, err := p.leastRecent(s.ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	ping(first)
	deadline := time.Now().Add(5 * time.Second) // the first call dials slot 1 in the background
	for p.slots[1].cur.Load() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	second, err := p.leastRecent(s.ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("the connection Redis just answered was picked again")
	}
	ping(second)
	if again, _ := p.leastRecent(s.ctx, 1); again != first {
		t.Fatal("the connection answered longest ago was not picked")
	}
}
