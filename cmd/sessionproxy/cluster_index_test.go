package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/cluster"
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
	// WATCH moves the client to a connection of its own (for good, as documented: a client of
	// its own here): its session writes are indexed too.
	watcher := redis.NewClient(&redis.Options{Addr: p.Addr, PoolSize: 1})
	defer watcher.Close()
	err := watcher.Watch(ctx, func(tx *redis.Tx) error {
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, "session:w", "userid", "500")
			return nil
		})
		return err
	}, "session:w")
	if err != nil {
		t.Fatal(err)
	}
	converge("500", "w")
	// WAIT covers the writes before it, on every node they went to.
	pipe := c.Pipeline()
	for _, sid := range []string{"w1", "w2", "w3", "w4"} {
		pipe.HSet(ctx, "session:"+sid, "userid", "600")
	}
	wait := pipe.Do(ctx, "WAIT", 1, 2000)
	if _, err := pipe.Exec(ctx); err != nil || wait.Val() != int64(1) {
		t.Fatalf("WAIT after writes to several nodes: %v %v, want 1", wait.Val(), err)
	}
	if err := c.Del(ctx, "session:w", "session:w1", "session:w2", "session:w3", "session:w4").Err(); err != nil {
		t.Fatal(err)
	}
	converge("500")
	converge("600")
	if rep := checkReport(t, c, "SESSIONS.CHECK"); rep["missing"]+rep["stale"]+rep["orphans"] != 0 {
		t.Fatalf("SESSIONS.CHECK after the writes: %v", rep)
	}
	// Drift made behind the proxy's back: sessions written straight to the cluster, an index
	// entry removed, one added for a session that does not exist, an owner map entry left over.
	for _, sid := range []string{"x1", "x2", "x3"} {
		direct.HSet(ctx, "session:"+sid, "userid", "400")
	}
	direct.SRem(ctx, "user:300", "{t}1")
	direct.SAdd(ctx, "user:300", "ghost")
	direct.Del(ctx, "session:{t}3")
	rep := checkReport(t, c, "SESSIONS.CHECK")
	if rep["missing"] != 4 || rep["stale"] != 2 || rep["orphans"] != 1 {
		t.Fatalf("SESSIONS.CHECK of the drift: %v, want missing 4, stale 2, orphans 1", rep)
	}
	if rep := checkReport(t, c, "SESSIONS.REINDEX"); rep["fixed"] == 0 {
		t.Fatalf("SESSIONS.REINDEX fixed nothing: %v", rep)
	}
	converge("300", "{t}1")
	converge("400", "x1", "x2", "x3")
	if rep := checkReport(t, c, "SESSIONS.CHECK"); rep["missing"]+rep["stale"]+rep["orphans"] != 0 {
		t.Fatalf("SESSIONS.CHECK after SESSIONS.REINDEX: %v", rep)
	}
	// The command-line tools cover every primary too.
	t.Setenv("SESSIONPROXY_UPSTREAM_MODE", "cluster")
	t.Setenv("SESSIONPROXY_UPSTREAM_ADDRS", cl.Nodes[2].Addr())
	t.Setenv("SESSIONPROXY_INDEX_CLUSTER", "true")
	direct.SRem(ctx, "user:400", "x2")
	if code, rep, out := modelRunCLI(t, "check"); code != 3 || rep.Missing != 1 || rep.Scanned != 5 { // c, {t}1, x1-x3
		t.Fatalf("sessionproxy check: exit %d, %+v: %s", code, rep, out)
	}
	if code, rep, out := modelRunCLI(t, "reindex"); code != 0 || rep.Fixed == 0 {
		t.Fatalf("sessionproxy reindex: exit %d, %+v: %s", code, rep, out)
	}
	if code, rep, out := modelRunCLI(t, "check"); code != 0 || rep.Missing+rep.Stale+rep.Orphans != 0 {
		t.Fatalf("sessionproxy check after reindex: exit %d, %+v: %s", code, rep, out)
	}
	// SESSIONS.* run as the proxy's own user: not for a client authenticated as another one.
	for _, n := range cl.Nodes {
		if _, err := n.DoText("ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all"); err != nil {
			t.Fatal(err)
		}
	}
	app := redis.NewClient(&redis.Options{Addr: p.Addr, Username: "app", Password: "pw"})
	defer app.Close()
	if err := app.Do(ctx, "SESSIONS.LIST", "300").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Fatalf("SESSIONS.LIST as another ACL user: %v, want NOPERM", err)
	}
	if out := p.stderr.String(); strings.Contains(out, "level=ERROR") {
		t.Fatalf("errors logged:\n%s", out)
	}
}

// checkReport runs SESSIONS.CHECK or SESSIONS.REINDEX and returns its numbers by name.
func checkReport(t *testing.T, c *redis.Client, cmd string) map[string]int64 {
	t.Helper()
	vs, err := c.Do(context.Background(), cmd).Slice()
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	out := map[string]int64{}
	for i := 0; i+1 < len(vs); i += 2 {
		switch v := vs[i+1].(type) {
		case int64:
			out[fmt.Sprint(vs[i])] = v
		case string:
		default:
			t.Fatalf("%s: field %v is %T", cmd, vs[i], v)
		}
	}
	for _, f := range []string{"scanned", "missing", "stale", "orphans", "fixed"} {
		if _, ok := out[f]; !ok {
			t.Fatalf("%s: no %s in %v", cmd, f, vs)
		}
	}
	return out
}

// TestClusterIndexModel is the randomized model test of the index on a cluster: concurrent
// clients write sessions through the proxy (pipelines, MULTI on one slot, owner changes, renames
// within a slot, deletes across slots, short TTLs); once the TTLs have run out, the index keys
// read from every primary hold exactly the sessions read from every primary, and SESSIONS.LIST
// agrees for every user.
func TestClusterIndexModel(t *testing.T) {
	// Small batches: outboxes, sweeps and repairs cross batch boundaries often.
	cl, p := startClusterIndexProxy(t, "SESSIONPROXY_REAPER_BATCH=4")
	ctx := context.Background()
	const clients, opsEach, users = 6, 400, 12
	sid := func(r *rand.Rand) string {
		if r.IntN(3) == 0 { // a few hash-tag groups: renames and transactions within a slot
			return fmt.Sprintf("{g%d}%d", r.IntN(4), r.IntN(6))
		}
		return strconv.Itoa(r.IntN(150))
	}
	uid := func(r *rand.Rand) string { return strconv.Itoa(r.IntN(users)) }
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for w := range clients {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 42))
			c := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
			defer c.Close()
			for i := 0; i < opsEach; {
				pipe := c.Pipeline()
				if r.IntN(5) == 0 {
					pipe = c.TxPipeline()
				}
				tag := fmt.Sprintf("{g%d}", r.IntN(4))
				n := 1 + r.IntN(4)
				for range n {
					k := "session:" + sid(r)
					if r.IntN(2) == 0 {
						k = "session:" + tag + strconv.Itoa(r.IntN(6)) // one slot: a transaction stays valid
					}
					switch r.IntN(10) {
					case 0, 1, 2:
						pipe.HSet(ctx, k, "userid", uid(r), "name", "x")
					case 3:
						pipe.HSet(ctx, k, "name", "y")
					case 4:
						pipe.Del(ctx, k, "session:"+sid(r))
					case 5:
						pipe.PExpire(ctx, k, time.Duration(50+r.IntN(400))*time.Millisecond)
					case 6:
						pipe.Expire(ctx, k, time.Hour)
					case 7:
						pipe.Persist(ctx, k)
					case 8:
						pipe.Rename(ctx, "session:"+tag+strconv.Itoa(r.IntN(6)), "session:"+tag+strconv.Itoa(r.IntN(6)))
					case 9:
						pipe.HDel(ctx, k, "userid")
					}
				}
				_, err := pipe.Exec(ctx)
				if err != nil && !isModelErr(err) {
					errs <- fmt.Errorf("client %d: %w", w, err)
					return
				}
				i += n
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // every short TTL has run out: the index must follow
	// Converged: the index read from every primary is exactly what the sessions say.
	direct := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer direct.Close()
	var missing, stale []string
	ok := waitFor(5*time.Second, func() bool {
		want, got := clusterSessions(t, direct), clusterIndex(t, direct)
		missing, stale = diffIndex(want, got)
		return len(missing) == 0 && len(stale) == 0
	})
	if !ok {
		t.Fatalf("index drift after convergence: missing %q, stale %q", missing, stale)
	}
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer c.Close()
	if rep := checkReport(t, c, "SESSIONS.CHECK"); rep["missing"]+rep["stale"]+rep["orphans"] != 0 {
		t.Errorf("SESSIONS.CHECK after convergence: %v", rep)
	}
	want := clusterSessions(t, direct)
	total := 0
	for u := range users {
		got, err := c.Do(ctx, "SESSIONS.LIST", strconv.Itoa(u)).StringSlice()
		if err != nil {
			t.Fatal(err)
		}
		w := want[strconv.Itoa(u)]
		slices.Sort(w)
		if !slices.Equal(got, w) && !(len(got) == 0 && len(w) == 0) {
			t.Errorf("SESSIONS.LIST %d: %q, want %q", u, got, w)
			for _, id := range w {
				k := "session:" + id
				book := "sessionproxy:{" + cluster.SlotTag(cluster.Slot([]byte(k))) + "}:owners"
				t.Logf("%s: owner map %q, key %v, ttl %v", k, direct.HGet(ctx, book, k).Val(), direct.HGetAll(ctx, k).Val(), direct.PTTL(ctx, k).Val())
			}
		}
		total += len(w)
	}
	if total == 0 {
		t.Fatal("no live session left: the model checked nothing")
	}
	t.Logf("%d live sessions of %d users after %d operations", total, users, clients*opsEach)
}

// isModelErr: errors the model's commands may get as Redis would give them (RENAME of a missing
// key, a transaction whose keys were not in one slot, a wrong type).
func isModelErr(err error) bool {
	s := err.Error()
	return strings.Contains(s, "no such key") || strings.Contains(s, "CROSSSLOT") || strings.Contains(s, "EXECABORT") ||
		strings.Contains(s, "WRONGTYPE")
}

// clusterSessions reads every primary's session hashes: uid -> session ids.
func clusterSessions(t *testing.T, c *redis.ClusterClient) map[string][]string {
	t.Helper()
	out, err := readSessions(c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// clusterIndex reads every primary's index keys: uid -> session ids.
func clusterIndex(t *testing.T, c *redis.ClusterClient) map[string][]string {
	t.Helper()
	out, err := readIndex(c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readSessions(c *redis.ClusterClient) (map[string][]string, error) {
	out := map[string][]string{}
	var mu sync.Mutex
	err := c.ForEachMaster(context.Background(), func(ctx context.Context, n *redis.Client) error {
		keys, err := scanAll(ctx, n, "session:*")
		if err != nil {
			return err
		}
		for _, k := range keys {
			u, err := n.HGet(ctx, k, "userid").Result()
			if err == redis.Nil || (err != nil && strings.Contains(err.Error(), "WRONGTYPE")) || u == "" {
				continue
			}
			if err != nil {
				return err
			}
			mu.Lock()
			out[u] = append(out[u], strings.TrimPrefix(k, "session:"))
			mu.Unlock()
		}
		return nil
	})
	return out, err
}

func readIndex(c *redis.ClusterClient) (map[string][]string, error) {
	out := map[string][]string{}
	var mu sync.Mutex
	err := c.ForEachMaster(context.Background(), func(ctx context.Context, n *redis.Client) error {
		keys, err := scanAll(ctx, n, "user:*")
		if err != nil {
			return err
		}
		for _, k := range keys {
			m, err := n.SMembers(ctx, k).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			out[strings.TrimPrefix(k, "user:")] = append(out[strings.TrimPrefix(k, "user:")], m...)
			mu.Unlock()
		}
		return nil
	})
	return out, err
}

func scanAll(ctx context.Context, n *redis.Client, match string) ([]string, error) {
	var out []string
	it := n.Scan(ctx, 0, match, 1000).Iterator()
	for it.Next(ctx) {
		out = append(out, it.Val())
	}
	return out, it.Err()
}

// diffIndex lists "uid/sid" entries the index lacks (missing) and has in excess (stale).
func diffIndex(want, got map[string][]string) (missing, stale []string) {
	set := func(m map[string][]string) map[string]bool {
		s := map[string]bool{}
		for u, ids := range m {
			for _, id := range ids {
				s[u+"/"+id] = true
			}
		}
		return s
	}
	w, g := set(want), set(got)
	for e := range w {
		if !g[e] {
			missing = append(missing, e)
		}
	}
	for e := range g {
		if !w[e] {
			stale = append(stale, e)
		}
	}
	slices.Sort(missing)
	slices.Sort(stale)
	return missing, stale
}

// TestClusterIndexProxyCrash: kill -9 of the proxy in the middle of session-write traffic, at
// random points, several times; a proxy started afterwards completes what the dead ones left in
// the outboxes, and the index has no drift within 5 s.
func TestClusterIndexProxyCrash(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 1)
	env := []string{"SESSIONPROXY_UPSTREAM_MODE=cluster", "SESSIONPROXY_UPSTREAM_ADDRS=" + cl.Nodes[0].Addr(),
		"SESSIONPROXY_INDEX_CLUSTER=true", "SESSIONPROXY_REAPER_INTERVAL=200ms"}
	direct := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer direct.Close()
	const rounds = 6
	left, writes := 0, 0
	for round := range rounds {
		p := startProxy(t, cl.Nodes[0].Addr(), env...)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var mu sync.Mutex
		for w := range 4 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				c := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
				defer c.Close()
				for i := 0; i < 5000 && ctx.Err() == nil; i++ {
					pipe := c.Pipeline()
					for range 8 {
						k := "session:" + strconv.Itoa(r.IntN(300))
						switch r.IntN(4) {
						case 0:
							pipe.Del(ctx, k)
						case 1:
							tag := fmt.Sprintf("session:{g%d}", r.IntN(8))
							pipe.Rename(ctx, tag+strconv.Itoa(r.IntN(4)), tag+strconv.Itoa(r.IntN(4)))
						default:
							pipe.HSet(ctx, k, "userid", strconv.Itoa(r.IntN(20)))
							pipe.HSet(ctx, fmt.Sprintf("session:{g%d}%d", r.IntN(8), r.IntN(4)), "userid", strconv.Itoa(r.IntN(20)))
						}
					}
					if _, err := pipe.Exec(ctx); err != nil && !isModelErr(err) {
						return // the proxy died
					}
					mu.Lock()
					writes += 8
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Duration(150+rand.IntN(350)) * time.Millisecond)
		p.kill()
		cancel()
		wg.Wait()
		left += outboxEntries(t, direct)
	}
	startProxy(t, cl.Nodes[0].Addr(), env...)
	var missing, stale []string
	start := time.Now()
	ok := waitFor(5*time.Second, func() bool {
		missing, stale = diffIndex(clusterSessions(t, direct), clusterIndex(t, direct))
		return len(missing) == 0 && len(stale) == 0 && outboxEntries(t, direct) == 0
	})
	if !ok {
		t.Fatalf("index drift 5 s after the restart: missing %q, stale %q, outbox entries %d", missing, stale, outboxEntries(t, direct))
	}
	t.Logf("%d crashes during %d session writes left %d outbox entries; converged %v after the restart",
		rounds, writes, left, time.Since(start).Round(10*time.Millisecond))
	if left == 0 {
		t.Errorf("no crash left outbox entries behind: the test did not reach the window between the two steps")
	}
}

// outboxEntries counts the entries in every slot's outbox on every primary.
func outboxEntries(t *testing.T, c *redis.ClusterClient) int {
	var mu sync.Mutex
	n := 0
	err := c.ForEachMaster(context.Background(), func(ctx context.Context, node *redis.Client) error {
		keys, err := scanAll(ctx, node, "sessionproxy:{*}:outbox")
		if err != nil {
			return err
		}
		for _, k := range keys {
			l, err := node.LLen(ctx, k).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			n += int(l)
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestClusterIndexReapers: two, then three proxies on one cluster, 10,000 sessions of 200 users with
// TTLs of 1-5 s, with keyevents on every primary and with one primary publishing none (the sweep
// alone there): 3 s after the last deadline no index entry is left; each primary's reaping is
// held by one proxy (leases, shared out), and each session is cleaned once, not once per proxy.
func TestClusterIndexReapers(t *testing.T) {
	for _, n := range []int{2, 3} {
		for _, silent := range []bool{false, true} {
			name := fmt.Sprintf("%d proxies, keyevents on every primary", n)
			if silent {
				name = fmt.Sprintf("%d proxies, keyevents off on one primary", n)
			}
			t.Run(name, func(t *testing.T) { testClusterReapers(t, n, silent) })
		}
	}
}

func testClusterReapers(t *testing.T, proxies int, silent bool) {
	cl := redistest.StartCluster(t, 3, 1)
	env := []string{"SESSIONPROXY_UPSTREAM_MODE=cluster", "SESSIONPROXY_UPSTREAM_ADDRS=" + cl.Nodes[0].Addr(),
		"SESSIONPROXY_INDEX_CLUSTER=true"}
	var ps []*proxyProc
	for i := range proxies {
		ps = append(ps, startProxy(t, cl.Nodes[i].Addr(), env...))
	}
	ctx := context.Background()
	direct := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer direct.Close()
	sum := func(name string) float64 {
		total := 0.0
		for _, p := range ps {
			total += scrapeMetrics(t, p.HTTP)[name]
		}
		return total
	}
	// Every primary's lease is taken (and its keyevents subscribed) before the test turns one
	// primary's notifications off: a subscription switches them on.
	// The proxies share them: none holds more than its share.
	share := float64((3 + proxies - 1) / proxies)
	balanced := func() bool {
		for _, p := range ps {
			if scrapeMetrics(t, p.HTTP)["sessionproxy_reaper_cluster_leases"] > share {
				return false
			}
		}
		return sum("sessionproxy_reaper_cluster_leases") == 3
	}
	if !waitFor(10*time.Second, balanced) {
		t.Fatalf("leases held: %v in all, want 3, at most %v each", sum("sessionproxy_reaper_cluster_leases"), share)
	}
	time.Sleep(300 * time.Millisecond)
	if silent {
		if err := redis.NewClient(&redis.Options{Addr: cl.Nodes[0].Addr()}).ConfigSet(ctx, "notify-keyspace-events", "").Err(); err != nil {
			t.Fatal(err)
		}
	}
	const sessions, users = 10000, 200
	var last time.Time
	for i := 0; i < sessions; i += 500 {
		c := redis.NewClient(&redis.Options{Addr: ps[i/500%proxies].Addr})
		pipe := c.Pipeline()
		for j := i; j < i+500; j++ {
			k := "session:" + strconv.Itoa(j)
			pipe.HSet(ctx, k, "userid", strconv.Itoa(j%users))
			pipe.PExpire(ctx, k, time.Duration(1000+j%4000)*time.Millisecond)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		last = time.Now().Add(5 * time.Second)
		c.Close()
	}
	if n := len(clusterIndex(t, direct)); n != users {
		t.Fatalf("index keys after the writes: %d, want %d", n, users)
	}
	time.Sleep(time.Until(last.Add(3 * time.Second)))
	if idx := clusterIndex(t, direct); len(idx) != 0 {
		n := 0
		for _, ids := range idx {
			n += len(ids)
		}
		t.Fatalf("%d index entries of %d users left 3 s after the last deadline", n, len(idx))
	}
	cleanups := sum(`sessionproxy_reaper_cleanups_total{path="event"}`) + sum(`sessionproxy_reaper_cleanups_total{path="sweep"}`)
	scripts := sum(`sessionproxy_reaper_cluster_scripts_total{path="event"}`) + sum(`sessionproxy_reaper_cluster_scripts_total{path="sweep"}`)
	t.Logf("cleanups: event %v, sweep %v; cleanup scripts run: %v (event %v, sweep %v); leases %v",
		sum(`sessionproxy_reaper_cleanups_total{path="event"}`), sum(`sessionproxy_reaper_cleanups_total{path="sweep"}`),
		scripts, sum(`sessionproxy_reaper_cluster_scripts_total{path="event"}`), sum(`sessionproxy_reaper_cluster_scripts_total{path="sweep"}`),
		sum("sessionproxy_reaper_cluster_leases"))
	if cleanups != sessions {
		t.Errorf("sessions cleaned %v times in all, want %d: each once", cleanups, sessions)
	}
	if sweep := sum(`sessionproxy_reaper_cleanups_total{path="sweep"}`); silent && sweep < sessions/6 {
		t.Errorf("the sweep cleaned %v sessions; the primary without keyevents holds about a third of %d", sweep, sessions)
	}
	// One reaper per primary runs at most one sweep script per due slot and batch (each cleans
	// at least one session) and one event script per slot and burst of keyevents (at most one
	// event per session): at most two scripts per session, whatever the number of proxies.
	// N proxies each reaping everything would run up to N times that.
	if scripts > 2*sessions {
		t.Errorf("%v cleanup scripts for %d sessions: more than one proxy reaps a primary", scripts, sessions)
	}
	// Each primary's keyevents reach one proxy.
	err := direct.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		subs, err := n.PubSubNumSub(ctx, "__keyevent@0__:expired").Result()
		if err == nil && subs["__keyevent@0__:expired"] != 1 {
			err = fmt.Errorf("%s: %d subscribers to its expired keyevents, want 1", n.Options().Addr, subs["__keyevent@0__:expired"])
		}
		return err
	})
	if err != nil {
		t.Error(err)
	}
}

// sessionTraffic writes sessions through the proxy at addr from 4 clients until stop closes:
// owner changes, short TTLs and deletes, each pipeline followed by WAIT 1 500. Each client has
// keys of its own, so the state a key was left in by its last acknowledged pipeline is known,
// unless a later pipeline failed (then it is unknown: acked has no entry for it).
type sessionTraffic struct {
	mu     sync.Mutex
	acked  map[string]string // session key -> owner it was left with, WAIT-acknowledged, no TTL
	writes int
	errs   map[string]int // failures by first word
	first  []string       // the first failure of each kind
	wg     sync.WaitGroup
}

// atLeast waits until n lasting states are acknowledged, or d has passed: on a busy host (CI
// runs many clusters at once) a fixed time let too few writes through to check anything.
func (tr *sessionTraffic) atLeast(n int, d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		tr.mu.Lock()
		k := len(tr.acked)
		tr.mu.Unlock()
		if k >= n {
			return
		}
	}
}

func startSessionTraffic(addr string, stop <-chan struct{}, slots int) *sessionTraffic {
	tr := &sessionTraffic{acked: map[string]string{}, errs: map[string]int{}}
	ctx := context.Background()
	for w := range 4 {
		tr.wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DisableIdentity: true})
			defer c.Close()
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				pipe := c.Pipeline()
				state := map[string]string{}
				for range 10 {
					n := r.IntN(200)
					k := fmt.Sprintf("session:w%d-%d", w, n)
					if slots > 0 { // in the first slots only (those a reshard moves)
						k = fmt.Sprintf("session:{%s}w%d-%d", cluster.SlotTag(n%slots), w, n)
					}
					switch r.IntN(8) {
					case 0:
						pipe.Del(ctx, k)
						state[k] = ""
					case 1:
						pipe.HSet(ctx, k, "userid", strconv.Itoa(r.IntN(30)))
						pipe.PExpire(ctx, k, time.Duration(300+r.IntN(1200))*time.Millisecond)
						state[k] = "" // gone soon: not counted as a lasting write
					default:
						u := strconv.Itoa(r.IntN(30))
						pipe.HSet(ctx, k, "userid", u)
						pipe.Persist(ctx, k)
						state[k] = u
					}
				}
				wait := pipe.Do(ctx, "WAIT", 1, 500)
				_, err := pipe.Exec(ctx)
				n, _ := wait.Int()
				tr.mu.Lock()
				tr.writes += len(state)
				for k, u := range state {
					if err == nil && n >= 1 && u != "" {
						tr.acked[k] = u
					} else {
						delete(tr.acked, k) // deleted, expiring, or unknown
					}
				}
				if err != nil {
					kind := strings.Fields(err.Error())[0]
					if tr.errs[kind]++; tr.errs[kind] == 1 {
						tr.first = append(tr.first, err.Error())
					}
					time.Sleep(20 * time.Millisecond)
				}
				tr.mu.Unlock()
			}
		})
	}
	return tr
}

// check waits for the index to converge (no drift) and finds every acknowledged session write
// in the sessions and in the index.
func (tr *sessionTraffic) check(t *testing.T, direct *redis.ClusterClient, within time.Duration) {
	t.Helper()
	tr.wg.Wait()
	time.Sleep(1600 * time.Millisecond) // the short TTLs run out
	var missing, stale []string
	var err error
	start := time.Now()
	if !waitFor(within, func() bool {
		var want, got map[string][]string
		if want, err = readSessions(direct); err == nil {
			got, err = readIndex(direct)
		}
		missing, stale = diffIndex(want, got)
		return err == nil && len(missing) == 0 && len(stale) == 0
	}) {
		t.Fatalf("index drift %v after the traffic: missing %q, stale %q (last read error: %v)", within, missing, stale, err)
	}
	idx := clusterIndex(t, direct)
	lost := 0
	for k, u := range tr.acked {
		sid := strings.TrimPrefix(k, "session:")
		if got := direct.HGet(context.Background(), k, "userid").Val(); got != u || !slices.Contains(idx[u], sid) {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged write lost: %s owned by %q, now %q, in its index: %v", k, u, got, slices.Contains(idx[u], sid))
			}
		}
	}
	if len(tr.acked) < 100 {
		t.Errorf("only %d acknowledged lasting states to check: too little traffic got through", len(tr.acked))
	}
	t.Logf("%d session writes, %d acknowledged lasting states checked, %d lost; errors meanwhile %v %q; converged %v after the traffic",
		tr.writes, len(tr.acked), lost, tr.errs, tr.first, time.Since(start).Round(10*time.Millisecond))
}

// TestClusterIndexReshard: 300 slots move between primaries (redis-cli --cluster reshard)
// during session-write and expiry traffic through the proxy: the bookkeeping moves with the
// slots, no acknowledged write is lost, and the index converges with no drift.
func TestClusterIndexReshard(t *testing.T) {
	cl, p := startClusterIndexProxy(t)
	direct := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer direct.Close()
	id := func(s *redistest.Server) string {
		out, err := s.DoText("CLUSTER", "MYID")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	stop := make(chan struct{})
	tr := startSessionTraffic(p.Addr, stop, 300)
	time.Sleep(300 * time.Millisecond)
	out, err := exec.Command("redis-cli", "--cluster", "reshard", cl.Nodes[0].Addr(), "--cluster-from", id(cl.Nodes[0]),
		"--cluster-to", id(cl.Nodes[1]), "--cluster-slots", "300", "--cluster-yes").CombinedOutput()
	time.Sleep(300 * time.Millisecond)
	tr.atLeast(150, 15*time.Second)
	close(stop)
	if err != nil {
		t.Fatalf("reshard: %v\n%s", err, out)
	}
	tr.check(t, direct, 5*time.Second)
	m := scrapeMetrics(t, p.HTTP)
	if m[`sessionproxy_cluster_redirects_total{kind="moved"}`] == 0 {
		t.Error("no -MOVED followed: the session writes did not meet the moving slots")
	}
	t.Logf("followed %v -MOVED, %v -ASK, %v -TRYAGAIN", m[`sessionproxy_cluster_redirects_total{kind="moved"}`],
		m[`sessionproxy_cluster_redirects_total{kind="ask"}`], m[`sessionproxy_cluster_redirects_total{kind="tryagain"}`])
}

// TestClusterIndexFailover: kill -9 of a primary during session-write and expiry traffic; its
// replica takes over. Writes acknowledged with WAIT 1 are all in the sessions and the index, and
// after the catch-up the index has no drift.
func TestClusterIndexFailover(t *testing.T) {
	// Two replicas a primary: the promoted one still has one, so WAIT 1 acknowledges writes
	// after the failover too.
	cl := redistest.StartCluster(t, 3, 2)
	p := startProxy(t, cl.Nodes[1].Addr(), "SESSIONPROXY_UPSTREAM_MODE=cluster",
		"SESSIONPROXY_UPSTREAM_ADDRS="+cl.Nodes[1].Addr()+","+cl.Nodes[2].Addr(),
		"SESSIONPROXY_INDEX_CLUSTER=true", "SESSIONPROXY_REAPER_INTERVAL=200ms")
	// Sessions written once before the kill and acknowledged: they must all be there after it.
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer c.Close()
	pipe := c.Pipeline()
	for i := range 300 {
		pipe.HSet(ctx, fmt.Sprintf("session:pre-%d", i), "userid", strconv.Itoa(i%30))
	}
	wait := pipe.Do(ctx, "WAIT", 2, 2000)
	if _, err := pipe.Exec(ctx); err != nil || wait.Val() != int64(2) {
		t.Fatalf("writing the first sessions: %v, WAIT %v", err, wait.Val())
	}
	stop := make(chan struct{})
	tr := startSessionTraffic(p.Addr, stop, 0)
	time.Sleep(500 * time.Millisecond)
	cl.Nodes[0].Stop() // SIGKILL
	if err := waitFailover(cl.Nodes[1], cl.Nodes[0].Addr(), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	close(stop)
	direct := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()[1:]}) // the map after the failover
	defer direct.Close()
	tr.wg.Wait()
	for i := range 300 {
		tr.acked[fmt.Sprintf("session:pre-%d", i)] = strconv.Itoa(i % 30)
	}
	tr.check(t, direct, 10*time.Second)
	m := scrapeMetrics(t, p.HTTP)
	if m["sessionproxy_reaper_cluster_catchups_total"] == 0 {
		t.Error("no catch-up ran after the failover")
	}
}

// waitFailover waits until node's slot map no longer names dead and the cluster is ok.
func waitFailover(node *redistest.Server, dead string, within time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: node.Addr()})
	defer c.Close()
	var info string
	if waitFor(within, func() bool {
		info, _ = node.DoText("CLUSTER", "INFO")
		slots, err := c.ClusterSlots(context.Background()).Result()
		if err != nil || !strings.Contains(info, "cluster_state:ok") {
			return false
		}
		for _, s := range slots {
			if s.Nodes[0].Addr == dead {
				return false
			}
		}
		return true
	}) {
		return nil
	}
	return fmt.Errorf("no failover of %s after %v:\n%s", dead, within, info)
}
