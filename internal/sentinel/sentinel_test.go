package sentinel

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestResolve: the watcher returns the master a sentinel names, and refuses a node that the
// sentinel still names but that is no master any more (ROLE), as during a failover.
func TestResolve(t *testing.T) {
	m := redistest.Start(t)
	r := redistest.StartReplica(t, m)
	s := redistest.StartSentinel(t, "mymaster", m, 1, redistest.SentinelTiming{DownAfter: 5 * time.Second, FailoverTimeout: 10 * time.Second})
	w, err := New(Options{Addrs: []string{s.Addr()}, Master: "mymaster",
		Node: redis.Options{DialTimeout: time.Second, ReadTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := w.Resolve(ctx)
	if err != nil || got != m.Addr() {
		t.Fatalf("Resolve = %q, %v; want %s", got, err, m.Addr())
	}
	// Behind the sentinel's back, the master becomes a replica of its replica.
	if _, err := m.DoText("REPLICAOF", "127.0.0.1", strconv.Itoa(r.Port)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DoText("REPLICAOF", "NO", "ONE"); err != nil {
		t.Fatal(err)
	}
	w2, err := New(Options{Addrs: []string{s.Addr()}, Master: "mymaster",
		Node: redis.Options{DialTimeout: time.Second, ReadTimeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if _, err := w2.lookup(context.Background()); err == nil || !strings.Contains(err.Error(), "not a master") {
		t.Fatalf("lookup of a demoted master: %v, want a refusal naming its role", err)
	}
	if _, err := New(Options{Master: "mymaster"}); err == nil {
		t.Error("New without sentinels succeeded")
	}
}

// TestStaleFirstSentinel: the first sentinel still names the former master, which has been
// demoted; a later sentinel names the new one. The watcher checks the role of what it is told
// even for its current master, so it moves to the new one instead of staying.
func TestStaleFirstSentinel(t *testing.T) {
	m := redistest.Start(t)
	r := redistest.StartReplica(t, m)
	slow := redistest.SentinelTiming{DownAfter: 30 * time.Second, FailoverTimeout: 60 * time.Second}
	s1 := redistest.StartSentinel(t, "mymaster", m, 1, slow)
	var switched atomic.Pointer[string]
	w, err := New(Options{Addrs: []string{s1.Addr()}, Master: "mymaster",
		Node:     redis.Options{DialTimeout: time.Second, ReadTimeout: time.Second},
		OnSwitch: func(a string) { switched.Store(&a) }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if got, err := w.Resolve(ctx); err != nil || got != m.Addr() {
		t.Fatalf("Resolve = %q, %v", got, err)
	}
	// The master becomes a replica of its replica, behind the first sentinel's back; a second
	// sentinel, started now, watches the new master under the same name.
	if _, err := r.DoText("REPLICAOF", "NO", "ONE"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DoText("REPLICAOF", "127.0.0.1", strconv.Itoa(r.Port)); err != nil {
		t.Fatal(err)
	}
	s2 := redistest.StartSentinel(t, "mymaster", r, 1, slow)
	w.o.Addrs, w.sentinel = append(w.o.Addrs, s2.Addr()), append(w.sentinel,
		redis.NewSentinelClient(&redis.Options{Addr: s2.Addr(), Protocol: 2, DisableIdentity: true}))
	if named, _ := s1.DoText("SENTINEL", "get-master-addr-by-name", "mymaster"); !strings.HasSuffix(named, "\n"+strconv.Itoa(m.Port)) {
		t.Skipf("the first sentinel already names %q: nothing stale to test", named)
	}
	go func() { _ = w.Run(ctx) }()
	deadline := time.Now().Add(3 * time.Second)
	for switched.Load() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if p := switched.Load(); p == nil || *p != r.Addr() {
		t.Fatalf("watcher still on %s 3 s after the demotion (first sentinel names the demoted master)", w.Addr())
	}
}
