package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/cluster"
	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// startClusterProxy runs a 3-primary, 3-replica cluster and the proxy in cluster mode in front
// of it (two of the nodes as seeds).
func startClusterProxy(t *testing.T) (*redistest.Cluster, *proxyProc) {
	t.Helper()
	cl := redistest.StartCluster(t, 3, 1)
	p := startProxy(t, cl.Nodes[0].Addr(), "SESSIONPROXY_UPSTREAM_MODE=cluster",
		"SESSIONPROXY_UPSTREAM_ADDRS="+cl.Nodes[0].Addr()+","+cl.Nodes[1].Addr())
	return cl, p
}

// TestClusterLikeOneRedis: commands sent through the proxy to a 3-primary cluster get the same
// reply bytes as the same commands sent to one standalone Redis, pipelined in one batch across
// the nodes, including multi-key commands split by slot; the cluster's own refusals are
// Redis Cluster's replies.
func TestClusterLikeOneRedis(t *testing.T) {
	_, p := startClusterProxy(t)
	ref := redistest.Start(t)
	seq := [][]string{
		{"SET", "foo", "bar"}, {"GET", "foo"}, {"SET", "session:1", "x"}, {"INCR", "counter"}, {"INCRBY", "counter", "41"},
		{"HSET", "session:2", "userid", "7", "name", "al"}, {"HGETALL", "session:2"}, {"LPUSH", "list", "a", "b", "c"},
		{"LRANGE", "list", "0", "-1"}, {"SADD", "set", "x", "y"}, {"SCARD", "set"}, {"ZADD", "z", "1", "one", "2", "two"},
		{"ZRANGE", "z", "0", "-1", "WITHSCORES"}, {"EXPIRE", "foo", "100"}, {"TTL", "foo"}, {"TYPE", "list"},
		{"MSET", "a", "1", "b", "2", "c", "3", "{tag}x", "4", "{tag}y", "5"}, {"MGET", "a", "b", "nokey", "c", "{tag}x", "{tag}y"},
		{"EXISTS", "a", "b", "nokey", "c", "a"}, {"TOUCH", "a", "nokey", "b"}, {"DEL", "a", "nokey", "b"}, {"MGET", "a", "b", "c"},
		{"UNLINK", "c", "{tag}x", "{tag}y", "x"}, {"DBSIZE"}, {"GET", "list"}, {"HGET", "session:2", "userid"},
		{"MSET", "odd"}, {"MGET"}, {"DEL"}, {"EXISTS", "foo"}, {"GETDEL", "session:1"}, {"PING"}, {"ECHO", "hi"},
		{"SET", "n", "1"}, {"INCRBYFLOAT", "n", "1.5"}, {"APPEND", "n", "x"}, {"STRLEN", "n"}, {"NOSUCHCOMMAND", "x"},
		{"RPOPLPUSH", "{l}1", "{l}2"}, {"LPUSH", "{l}1", "v"}, {"RPOPLPUSH", "{l}1", "{l}2"}, {"LRANGE", "{l}2", "0", "-1"},
		{"EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "scripted", "v"}, {"GET", "scripted"},
		{"EVAL", "return 1", "0"}, {"FLUSHDB"}, {"DBSIZE"}, {"MGET", "foo", "n"},
	}
	var batch []byte
	for _, c := range seq {
		batch = append(batch, encode(c...)...)
	}
	got := pipeline(t, p.Addr, batch, len(seq))
	want := pipeline(t, ref.Addr(), batch, len(seq))
	for i := range seq {
		if got[i] != want[i] {
			t.Errorf("%q: proxy %q, Redis %q", seq[i], got[i], want[i])
		}
	}
	// What Redis Cluster refuses, the proxy refuses the same way.
	c := dialRESP(t, p.Addr)
	for _, tc := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"SUNION", "a", "b"}, "-CROSSSLOT Keys in request don't hash to the same slot\r\n"},
		{[]string{"RENAME", "a", "b"}, "-CROSSSLOT Keys in request don't hash to the same slot\r\n"},
		{[]string{"SELECT", "1"}, "-ERR SELECT is not allowed in cluster mode\r\n"},
		{[]string{"SELECT", "0"}, "+OK\r\n"},
		// Keys in two slots but no value for the last: what a cluster node answers (this once
		// crashed the proxy); in one slot, the arity error.
		{[]string{"MSET", "foo", "1", "bar"}, "-CROSSSLOT Keys in request don't hash to the same slot\r\n"},
		{[]string{"MSET", "{t}a", "1", "{t}b"}, "-ERR wrong number of arguments for 'mset' command\r\n"},
		{[]string{"PING"}, "+PONG\r\n"},
	} {
		if got := c.do(tc.cmd...); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.cmd, got, tc.want)
		}
	}
	// INFO: a node's, with the proxy's section after it, as on one Redis.
	if got := c.do("INFO"); !strings.Contains(got, "# Server\r\n") || !strings.Contains(got, "\r\n\r\n# Proxy\r\n") ||
		!strings.Contains(got, "upstream_mode:cluster\r\n") {
		t.Errorf("INFO in cluster mode: %q", clip(got))
	}
	// The cluster index is off here (index.cluster): session writes pass plain and are counted.
	m := scrapeMetrics(t, p.HTTP)
	if n := m["sessionproxy_index_unindexed_writes_total"]; n != 3 { // SET session:1, HSET session:2, GETDEL session:1
		t.Errorf("unindexed session writes: %v, want 3", n)
	}
}

// pipeline sends batch in one write and reads n raw replies.
func pipeline(t *testing.T, addr string, batch []byte, n int) []string {
	t.Helper()
	c := dialRESP(t, addr)
	defer c.close()
	c.send(batch)
	out := make([]string, n)
	for i := range out {
		r, err := c.reply(5 * time.Second)
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		out[i] = r
	}
	return out
}

// TestClusterMultiKeyModel: random MGET/MSET/DEL/EXISTS/UNLINK/TOUCH over keys in many slots,
// pipelined, through the proxy and against one standalone Redis: the same reply bytes.
func TestClusterMultiKeyModel(t *testing.T) {
	_, p := startClusterProxy(t)
	ref := redistest.Start(t)
	rng := rand.New(rand.NewPCG(7, 11))
	key := func() string { return fmt.Sprintf("k%d", rng.IntN(40)) }
	for round := range 20 {
		var seq [][]string
		for range 30 {
			n := 1 + rng.IntN(6)
			switch op := rng.IntN(6); op {
			case 0:
				c := []string{"MSET"}
				for range n {
					c = append(c, key(), fmt.Sprint(rng.IntN(1000)))
				}
				seq = append(seq, c)
			default:
				c := []string{[]string{"MGET", "DEL", "EXISTS", "UNLINK", "TOUCH"}[op-1]}
				for range n {
					c = append(c, key())
				}
				seq = append(seq, c)
			}
		}
		var batch []byte
		for _, c := range seq {
			batch = append(batch, encode(c...)...)
		}
		got, want := pipeline(t, p.Addr, batch, len(seq)), pipeline(t, ref.Addr(), batch, len(seq))
		for i := range seq {
			if got[i] != want[i] {
				t.Fatalf("round %d, %q: proxy %q, Redis %q", round, seq[i], got[i], want[i])
			}
		}
	}
}

// TestClusterScan: a full SCAN through the proxy returns every key of every primary once.
func TestClusterScan(t *testing.T) {
	_, p := startClusterProxy(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	const n = 1000
	pipe := c.Pipeline()
	for i := range n {
		pipe.Set(ctx, fmt.Sprintf("scan:%d", i), "v", 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	var cursor uint64
	for calls := 0; ; calls++ {
		keys, next, err := c.Scan(ctx, cursor, "scan:*", 70).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			seen[k]++
		}
		if cursor = next; cursor == 0 {
			break
		}
		if calls > 10*n {
			t.Fatal("SCAN does not end")
		}
	}
	if len(seen) != n {
		t.Errorf("SCAN saw %d distinct keys, want %d", len(seen), n)
	}
	for k, v := range seen {
		if v != 1 {
			t.Errorf("%s returned %d times", k, v)
		}
	}
	if got, _ := c.DBSize(ctx).Result(); got != n {
		t.Errorf("DBSIZE %d, want %d", got, n)
	}
	if keys, _ := c.Keys(ctx, "scan:1*").Result(); len(keys) != 111 {
		t.Errorf("KEYS scan:1* returned %d keys, want 111", len(keys))
	}
}

// TestClusterReshard: redis-cli --cluster reshard moves 300 slots while checkers write unique
// values through the proxy and read them back: no wrong value, no lost acknowledged write, no
// error (single-key commands follow -MOVED and -ASK).
func TestClusterReshard(t *testing.T) {
	cl, p := startClusterProxy(t)
	ctx := context.Background()
	id := func(s *redistest.Server) string {
		out, err := s.DoText("CLUSTER", "MYID")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	from, to := id(cl.Nodes[0]), id(cl.Nodes[1])
	var mu sync.Mutex
	written := map[string]string{}
	var errs []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			c := redis.NewClient(&redis.Options{Addr: p.Addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1})
			defer c.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k, v := fmt.Sprintf("rs:%d:%d", w, i%500), fmt.Sprintf("%d-%d", w, i)
				if err := c.Set(ctx, k, v, 0).Err(); err != nil {
					mu.Lock()
					errs = append(errs, "SET "+k+": "+err.Error())
					mu.Unlock()
					continue
				}
				got, err := c.Get(ctx, k).Result()
				mu.Lock()
				if err != nil || got != v {
					errs = append(errs, fmt.Sprintf("GET %s: %q %v, want %q", k, got, err, v))
				}
				written[k] = v
				mu.Unlock()
			}
		})
	}
	out, err := exec.Command("redis-cli", "--cluster", "reshard", cl.Nodes[0].Addr(), "--cluster-from", from,
		"--cluster-to", to, "--cluster-slots", "300", "--cluster-yes").CombinedOutput()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("reshard: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Moving slot") {
		t.Fatalf("reshard moved nothing:\n%s", out)
	}
	if err := cl.WaitOK(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: p.Addr, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	for k, v := range written {
		if got, err := c.Get(ctx, k).Result(); err != nil || got != v {
			errs = append(errs, fmt.Sprintf("after: GET %s = %q %v, want %q", k, got, err, v))
		}
	}
	if len(errs) > 0 {
		t.Errorf("%d errors, e.g. %q", len(errs), errs[:min(5, len(errs))])
	}
	m := scrapeMetrics(t, p.HTTP)
	moved, ask := m[`sessionproxy_cluster_redirects_total{kind="moved"}`], m[`sessionproxy_cluster_redirects_total{kind="ask"}`]
	if moved == 0 {
		t.Error("no -MOVED followed: the reshard did not exercise the redirects")
	}
	t.Logf("%d keys checked across the reshard; followed %v -MOVED, %v -ASK; %v slot maps read", len(written),
		moved, ask, m["sessionproxy_cluster_slot_map_reads_total"])
}

// TestClusterAsk: a slot in migration (MIGRATING on its owner, IMPORTING on the target): a new
// key's write gets -ASK from the owner, and the proxy sends ASKING and the write to the target;
// reads of it follow the same way; once the slot is the target's, -MOVED leads there.
func TestClusterAsk(t *testing.T) {
	cl, p := startClusterProxy(t)
	ctx := context.Background()
	ranges, err := cluster.Fetch(ctx, cl.Nodes[0].Addr(), redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cluster.NewMap(ranges)
	if err != nil {
		t.Fatal(err)
	}
	const key = "askme"
	slot := cluster.Slot([]byte(key))
	byAddr := map[string]*redistest.Server{}
	for _, n := range cl.Nodes {
		byAddr[n.Addr()] = n
	}
	owner := byAddr[m.Node(slot)]
	var target *redistest.Server
	for _, a := range m.Primaries() {
		if a != owner.Addr() {
			target = byAddr[a]
			break
		}
	}
	myid := func(s *redistest.Server) string {
		id, err := s.DoText("CLUSTER", "MYID")
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	ownerID, targetID, ss := myid(owner), myid(target), fmt.Sprint(slot)
	for _, step := range []struct {
		s    *redistest.Server
		args []string
	}{
		{target, []string{"CLUSTER", "SETSLOT", ss, "IMPORTING", ownerID}},
		{owner, []string{"CLUSTER", "SETSLOT", ss, "MIGRATING", targetID}},
	} {
		if _, err := step.s.DoText(step.args...); err != nil {
			t.Fatal(err)
		}
	}
	c := dialRESP(t, p.Addr)
	if got := c.do("SET", key, "v1"); got != "+OK\r\n" {
		t.Fatalf("SET during the migration: %q", got)
	}
	if got := c.do("GET", key); got != "$2\r\nv1\r\n" {
		t.Fatalf("GET during the migration: %q", got)
	}
	if n, _ := owner.DoText("DBSIZE"); n != "0" {
		t.Errorf("the key went to the migrating owner (DBSIZE %s there)", n)
	}
	for _, s := range cl.Nodes[:3] {
		if _, err := s.DoText("CLUSTER", "SETSLOT", ss, "NODE", targetID); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.do("GET", key); got != "$2\r\nv1\r\n" {
		t.Fatalf("GET after the migration: %q", got)
	}
	mt := scrapeMetrics(t, p.HTTP)
	if mt[`sessionproxy_cluster_redirects_total{kind="ask"}`] < 2 || mt[`sessionproxy_cluster_redirects_total{kind="moved"}`] < 1 {
		t.Errorf("redirects followed: %v ask, %v moved; want at least 2 and 1",
			mt[`sessionproxy_cluster_redirects_total{kind="ask"}`], mt[`sessionproxy_cluster_redirects_total{kind="moved"}`])
	}
}

// TestClusterPrimaryFailure: kill -9 of a primary; its replica takes over its slots. Commands
// for them get errors until the proxy has read the new slot map, then succeed; no reply goes to
// the wrong command (every read returns the value last written to its key).
func TestClusterPrimaryFailure(t *testing.T) {
	cl, p := startClusterProxy(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 4})
	defer c.Close()
	last := map[string]string{}
	kinds := map[string]int{} // errors seen, by their first words
	write := func(round int) (fails int) {
		pipe := c.Pipeline()
		for i := range 300 {
			pipe.Set(ctx, fmt.Sprintf("pf:%d", i), fmt.Sprint(round), 0)
		}
		cmds, _ := pipe.Exec(ctx)
		for i, cmd := range cmds {
			if err := cmd.Err(); err != nil {
				kinds[strings.SplitN(err.Error(), ":", 2)[0]]++
				fails++
				continue
			}
			last[fmt.Sprintf("pf:%d", i)] = fmt.Sprint(round)
		}
		return fails
	}
	if f := write(0); f != 0 {
		t.Fatalf("%d writes failed before the failure", f)
	}
	killed := time.Now()
	cl.Nodes[0].Stop()
	round, sawErrors := 1, false
	for ; time.Since(killed) < 30*time.Second; round++ {
		f := write(round)
		sawErrors = sawErrors || f > 0
		if f == 0 && sawErrors {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !sawErrors {
		t.Log("no write failed: the failover was quicker than a round")
	}
	if f := write(round + 1); f != 0 {
		nodes, _ := cl.Nodes[1].DoText("CLUSTER", "NODES")
		t.Log(nodes)
		t.Fatalf("%d writes still failing %v after the kill", f, time.Since(killed))
	}
	t.Logf("writes to every slot succeed again %v after the kill; errors meanwhile: %v", time.Since(killed).Round(time.Millisecond), kinds)
	for k, v := range last {
		if got, err := c.Get(ctx, k).Result(); err != nil || got != v {
			t.Errorf("GET %s = %q %v, want %q", k, got, err, v)
		}
	}
}

// TestClusterTransactions: MULTI/EXEC whose keys share a slot commits on that slot's primary
// with the replies one Redis gives; a command of another slot gets -CROSSSLOT when queued and
// EXEC -EXECABORT, as Redis Cluster answers; DISCARD and nesting as Redis.
func TestClusterTransactions(t *testing.T) {
	_, p := startClusterProxy(t)
	ref := redistest.Start(t)
	same := [][]string{{"MULTI"}, {"SET", "{u1}a", "1"}, {"INCR", "{u1}a"}, {"GET", "{u1}b"}, {"PING"},
		{"LPUSH", "{u1}a", "x"}, {"EXEC"}, {"GET", "{u1}a"}, {"MULTI"}, {"MULTI"}, {"SET", "{u1}c", "v"}, {"DISCARD"},
		{"GET", "{u1}c"}, {"DISCARD"}, {"MULTI"}, {"EXEC"}}
	var batch []byte
	for _, c := range same {
		batch = append(batch, encode(c...)...)
	}
	got, want := pipeline(t, p.Addr, batch, len(same)), pipeline(t, ref.Addr(), batch, len(same))
	for i := range same {
		if got[i] != want[i] {
			t.Errorf("%q: proxy %q, Redis %q", same[i], got[i], want[i])
		}
	}
	c := dialRESP(t, p.Addr) // one command at a time, as redis-cli sends them
	for _, step := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"MULTI"}, "+OK\r\n"},
		{[]string{"SET", "{u2}a", "1"}, "+QUEUED\r\n"},
		{[]string{"SET", "{u3}a", "1"}, "-CROSSSLOT Keys in request don't hash to the same slot\r\n"},
		{[]string{"EXEC"}, "-EXECABORT Transaction discarded because of previous errors.\r\n"},
		{[]string{"EXISTS", "{u2}a"}, ":0\r\n"},
		{[]string{"MULTI"}, "+OK\r\n"},
		{[]string{"INCR", "{u2}n"}, "+QUEUED\r\n"},
		{[]string{"INCR", "{u2}n"}, "+QUEUED\r\n"},
		{[]string{"EXEC"}, "*2\r\n:1\r\n:2\r\n"},
	} {
		if got := c.do(step.cmd...); got != step.want {
			t.Errorf("%q: %q, want %q", step.cmd, got, step.want)
		}
	}
	ctx := context.Background()
	gc := redis.NewClient(&redis.Options{Addr: p.Addr, Protocol: 2, DisableIdentity: true})
	defer gc.Close()
	cmds, err := gc.TxPipelined(ctx, func(pp redis.Pipeliner) error {
		pp.Set(ctx, "{u4}k", "v", 0)
		pp.Get(ctx, "{u4}k")
		return nil
	})
	if err != nil || len(cmds) != 2 || cmds[1].(*redis.StringCmd).Val() != "v" {
		t.Errorf("go-redis TxPipelined: %v %v", cmds, err)
	}
}

// TestClusterOwnConnections: commands that need a connection of their own go on one to the
// right node: a blocking BLPOP is served by another client's LPUSH; SUBSCRIBE receives
// PUBLISHes sent through the proxy and straight to another node; SSUBSCRIBE goes to its shard
// channel's primary; WATCH/MULTI/EXEC on the key's node fail when the key changed meanwhile.
func TestClusterOwnConnections(t *testing.T) {
	cl, p := startClusterProxy(t)
	a, b := dialRESP(t, p.Addr), dialRESP(t, p.Addr)
	a.send(encode("BLPOP", "queue", "5"))
	time.Sleep(100 * time.Millisecond)
	if got := b.do("LPUSH", "queue", "job1"); got != ":1\r\n" {
		t.Fatalf("LPUSH: %q", got)
	}
	if got, err := a.reply(3 * time.Second); err != nil || got != "*2\r\n$5\r\nqueue\r\n$4\r\njob1\r\n" {
		t.Fatalf("BLPOP: %q %v", got, err)
	}

	sub := dialRESP(t, p.Addr)
	if got := sub.do("SUBSCRIBE", "news"); got != "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n" {
		t.Fatalf("SUBSCRIBE: %q", got)
	}
	if got := b.do("PUBLISH", "news", "one"); got != ":1\r\n" {
		t.Errorf("PUBLISH through the proxy: %q", got)
	}
	if _, err := cl.Nodes[2].DoText("PUBLISH", "news", "two"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"one", "two"} {
		if got, err := sub.reply(3 * time.Second); err != nil || got != "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$3\r\n"+want+"\r\n" {
			t.Errorf("message %s: %q %v", want, got, err)
		}
	}

	ssub := dialRESP(t, p.Addr)
	if got := ssub.do("SSUBSCRIBE", "orders"); got != "*3\r\n$10\r\nssubscribe\r\n$6\r\norders\r\n:1\r\n" {
		t.Fatalf("SSUBSCRIBE: %q", got)
	}
	if got := b.do("SPUBLISH", "orders", "o1"); got != ":1\r\n" {
		t.Errorf("SPUBLISH through the proxy: %q", got)
	}
	if got, err := ssub.reply(3 * time.Second); err != nil || got != "*3\r\n$8\r\nsmessage\r\n$6\r\norders\r\n$2\r\no1\r\n" {
		t.Errorf("smessage: %q %v", got, err)
	}

	w := dialRESP(t, p.Addr)
	for _, step := range []struct {
		c    *respConn
		cmd  []string
		want string
	}{
		{w, []string{"SET", "{acct}balance", "10"}, "+OK\r\n"},
		{w, []string{"WATCH", "{acct}balance"}, "+OK\r\n"},
		{b, []string{"INCR", "{acct}balance"}, ":11\r\n"},
		{w, []string{"MULTI"}, "+OK\r\n"},
		{w, []string{"SET", "{acct}balance", "0"}, "+QUEUED\r\n"},
		{w, []string{"EXEC"}, "*-1\r\n"},
		{w, []string{"WATCH", "{acct}balance"}, "+OK\r\n"},
		{w, []string{"MULTI"}, "+OK\r\n"},
		{w, []string{"DECRBY", "{acct}balance", "5"}, "+QUEUED\r\n"},
		{w, []string{"EXEC"}, "*1\r\n:6\r\n"},
	} {
		if got := step.c.do(step.cmd...); got != step.want {
			t.Errorf("%q: %q, want %q", step.cmd, got, step.want)
		}
	}
}

// TestClusterAuth: nodes that require a password; the proxy reads the slot map with
// upstream.password, which it does not lend to clients: a client's commands get the nodes'
// -NOAUTH until it AUTHs, and its AUTH is judged by the nodes.
func TestClusterAuth(t *testing.T) {
	const pw = "clu5ter-pw"
	cl := redistest.StartCluster(t, 3, 1, "--requirepass", pw, "--masterauth", pw)
	p := startProxy(t, cl.Nodes[0].Addr(), "SESSIONPROXY_UPSTREAM_MODE=cluster",
		"SESSIONPROXY_UPSTREAM_ADDRS="+cl.Nodes[0].Addr(), "SESSIONPROXY_UPSTREAM_PASSWORD="+pw)
	c := dialRESP(t, p.Addr)
	if got := c.do("MGET", "a", "b", "c"); !strings.HasPrefix(got, "-NOAUTH") {
		t.Errorf("MGET before AUTH: %q", got)
	}
	if got := c.do("AUTH", "wrong"); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Errorf("AUTH with a wrong password: %q", got)
	}
	if got := c.do("AUTH", pw); got != "+OK\r\n" {
		t.Errorf("AUTH: %q", got)
	}
	if got := c.do("MSET", "a", "1", "b", "2", "c", "3"); got != "+OK\r\n" {
		t.Fatalf("MSET across slots: %q", got)
	}
	if got := c.do("MGET", "a", "b", "c"); got != "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n3\r\n" {
		t.Errorf("MGET: %q", got)
	}
	if got := c.do("DEL", "a", "b", "c"); got != ":3\r\n" {
		t.Errorf("DEL after AUTH: %q", got)
	}
}

// TestClusterBusyScript: a script that loops on one node does not hold other clients' commands
// for that node behind it: past Redis' busy threshold they get Redis' -BUSY, as direct clients
// do, and SCRIPT KILL through the proxy (asked of every primary) ends it.
func TestClusterBusyScript(t *testing.T) {
	// The threshold is set before the proxy starts: it reads it at start (and every 30 s).
	cl := redistest.StartCluster(t, 3, 1, "--busy-reply-threshold", "100")
	p := startProxy(t, cl.Nodes[0].Addr(), "SESSIONPROXY_UPSTREAM_MODE=cluster",
		"SESSIONPROXY_UPSTREAM_ADDRS="+cl.Nodes[0].Addr())
	m, err := cluster.NewMap(mustRanges(t, cl))
	if err != nil {
		t.Fatal(err)
	}
	second := m.Primaries()[1] // not the first primary, the proxy's default node
	var keys []string          // keys on the second primary
	for i := 0; len(keys) < 2; i++ {
		if k := fmt.Sprintf("busy%d", i); m.Node(cluster.Slot([]byte(k))) == second {
			keys = append(keys, k)
		}
	}
	var clients []*respConn
	for range 10 {
		clients = append(clients, dialRESP(t, p.Addr))
	}
	looper := clients[0]
	looper.send(encode("EVAL", "while true do end", "1", keys[0]))
	time.Sleep(300 * time.Millisecond)
	for i, c := range clients[1:] {
		c.send(encode("GET", keys[1]))
		if got, err := c.reply(3 * time.Second); err != nil || !strings.HasPrefix(got, "-BUSY") {
			t.Fatalf("client %d: GET behind a busy script: %q %v", i+1, got, err)
		}
	}
	if got := dialRESP(t, p.Addr).do("SCRIPT", "KILL"); got != "+OK\r\n" {
		t.Fatalf("SCRIPT KILL: %q", got)
	}
	if got, err := looper.reply(3 * time.Second); err != nil || !strings.Contains(got, "killed") {
		t.Errorf("the killed script's reply: %q %v", got, err)
	}
}

func mustRanges(t *testing.T, cl *redistest.Cluster) []cluster.Range {
	t.Helper()
	ranges, err := cluster.Fetch(context.Background(), cl.Nodes[0].Addr(), redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return ranges
}
