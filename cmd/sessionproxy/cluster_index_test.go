package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// startClusterIndexProxy runs a 3-primary, 3-replica cluster and the proxy in front of it with
// the cluster index on (plus env).
func startClusterIndexProxy(t *testing.T, env ...string) (*redistest.Cluster, *proxyProc) {
	t.Helper()
	cl := redistest.StartCluster(t, 3, 1)
	p := startProxy(t, cl.Nodes[0].Addr(), append([]string{"SESSIONPROXY_UPSTREAM_MODE=cluster",
		"SESSIONPROXY_UPSTREAM_ADDRS=" + cl.Nodes[0].Addr() + "," + cl.Nodes[1].Addr(),
		"SESSIONPROXY_INDEX_CLUSTER=true", "SESSIONPROXY_REAPER_INTERVAL=200ms"}, env...)...)
	return cl, p
}

// TestClusterIndexBasics: on a cluster, session writes through the proxy reach the index keys
// on other nodes (read straight from the cluster, not through the proxy), owner changes move
// the entry, deletes and expiries remove it, and SESSIONS.LIST/COUNT/REVOKE answer across slots.
func TestClusterIndexBasics(t *testing.T) {
	cl, p := startClusterIndexProxy(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer c.Close()
	direct := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer direct.Close()
	members := func(uid string) []string {
		m, err := direct.SMembers(ctx, "user:"+uid).Result()
		if err != nil {
			t.Fatalf("SMEMBERS user:%s: %v", uid, err)
		}
		slices.Sort(m)
		return m
	}
	converge := func(uid string, want ...string) {
		t.Helper()
		if want == nil {
			want = []string{}
		}
		if !waitFor(2*time.Second, func() bool { return slices.Equal(members(uid), want) }) {
			t.Fatalf("user:%s = %q, want %q", uid, members(uid), want)
		}
	}
	for _, sid := range []string{"a", "b", "c", "d", "e"} {
		if err := c.HSet(ctx, "session:"+sid, "userid", "100", "name", "x").Err(); err != nil {
			t.Fatal(err)
		}
	}
	converge("100", "a", "b", "c", "d", "e")
	if err := c.HSet(ctx, "session:c", "userid", "200").Err(); err != nil { // owner change
		t.Fatal(err)
	}
	converge("100", "a", "b", "d", "e")
	converge("200", "c")
	if n := c.Del(ctx, "session:a", "session:b", "nokey").Val(); n != 2 { // split across slots
		t.Fatalf("DEL: %d", n)
	}
	converge("100", "d", "e")
	c.PExpire(ctx, "session:d", 300*time.Millisecond)
	converge("100", "e") // reaped: by the event or the sweep
	if got := c.Do(ctx, "SESSIONS.LIST", "100").String(); got != "SESSIONS.LIST 100: [e]" {
		t.Fatalf("SESSIONS.LIST: %s", got)
	}
	c.HSet(ctx, "session:f", "userid", "100")
	c.HSet(ctx, "session:g", "userid", "100")
	if n, err := c.Do(ctx, "SESSIONS.COUNT", "100").Int(); err != nil || n != 3 {
		t.Fatalf("SESSIONS.COUNT: %d %v", n, err)
	}
	if n, err := c.Do(ctx, "SESSIONS.REVOKE", "100").Int(); err != nil || n != 3 {
		t.Fatalf("SESSIONS.REVOKE: %d %v", n, err)
	}
	converge("100")
	if n := direct.Exists(ctx, "session:e", "session:f", "session:g").Val(); n != 0 {
		t.Fatalf("%d revoked sessions left", n)
	}
	// A transaction on one slot.
	tx := c.TxPipeline()
	tx.HSet(ctx, "session:{t}1", "userid", "300")
	tx.HSet(ctx, "session:{t}2", "userid", "300")
	tx.Rename(ctx, "session:{t}2", "session:{t}3")
	if _, err := tx.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	converge("300", "{t}1", "{t}3")
	if out := p.stderr.String(); strings.Contains(out, "level=ERROR") {
		t.Fatalf("errors logged:\n%s", out)
	}
}
