package cluster

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestMapOnRealCluster: a 3-primary, 3-replica cluster started from Debian's redis-server; the
// map built from its CLUSTER SLOTS sends every key to the node that takes it (a direct SET
// there answers OK, the other primaries answer -MOVED to it).
func TestMapOnRealCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 1)
	ctx := context.Background()
	ranges, err := Fetch(ctx, cl.Nodes[0].Addr(), redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMap(ranges)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Covered() || len(m.Primaries()) != 3 {
		t.Fatalf("map covers all: %v, primaries %v", m.Covered(), m.Primaries())
	}
	nodes := map[string]*redis.Client{}
	for _, a := range m.Primaries() {
		nodes[a] = redis.NewClient(&redis.Options{Addr: a, Protocol: 2, DisableIdentity: true, MaxRetries: -1})
		defer nodes[a].Close()
	}
	for i := range 200 {
		k := fmt.Sprintf("session:%d", i)
		if i%3 == 0 {
			k = fmt.Sprintf("{user%d}.sessions", i)
		}
		owner := m.Node(Slot([]byte(k)))
		for a, nc := range nodes {
			err := nc.Set(ctx, k, "v", 0).Err()
			switch {
			case a == owner && err != nil:
				t.Fatalf("SET %s on its owner %s: %v", k, a, err)
			case a != owner && (err == nil || !strings.HasPrefix(err.Error(), "MOVED "+strconv.Itoa(Slot([]byte(k)))+" ")):
				t.Fatalf("SET %s on %s (not the owner %s): %v", k, a, owner, err)
			case a != owner && !strings.HasSuffix(err.Error(), " "+owner):
				t.Fatalf("SET %s on %s: %v, want MOVED to %s", k, a, err, owner)
			}
		}
	}
	if _, err := NewMap([]Range{{Start: 0, End: 100, Primary: "a:1"}, {Start: 100, End: 200, Primary: "b:1"}}); err == nil {
		t.Error("overlapping ranges accepted")
	}
	if _, _, err := net.SplitHostPort(m.Primaries()[0]); err != nil {
		t.Error(err)
	}
}
