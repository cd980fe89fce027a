package sentinel

import (
	"context"
	"strconv"
	"strings"
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
