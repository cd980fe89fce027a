package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/cluster"
	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// clusterDiffMinCases: the cluster run must not silently shrink below this.
const clusterDiffMinCases = 240

// clusterDiffSkips: commands whose replies differ between one Redis and a cluster by design, and
// why; a case that sends one of them does not run here (it runs in TestDifferential).
var clusterDiffSkips = map[string]string{
	"keys": "order is per node", "scan": "cursor and order are per node", "randomkey": "a random node",
	"info": "one node's", "config": "one node's", "debug": "one node's", "memory": "one node's",
	"latency": "one node's", "slowlog": "one node's", "pubsub": "one node's channels",
	"hello":  "HELLO's mode says cluster",
	"select": "cluster has DB 0 only", "move": "cluster has DB 0 only", "swapdb": "cluster has DB 0 only",
	"copy": "DB option; cross-slot", "cluster": "cluster", "readonly": "cluster", "readwrite": "cluster",
	"role": "replication", "replicaof": "replication", "slaveof": "replication", "sync": "replication",
	"psync": "replication", "replconf": "replication", "failover": "replication", "wait": "replication",
	"save": "persistence", "bgsave": "persistence", "bgrewriteaof": "persistence", "lastsave": "persistence",
	"shutdown": "server", "monitor": "refused in cluster mode", "acl": "per node",
	"function": "per node; FUNCTION LIST/DUMP from one node", "script": "SCRIPT KILL per node",
	"sessions.list": "no index in cluster mode", "sessions.count": "no index in cluster mode",
	"sessions.revoke": "no index in cluster mode", "sessions.reindex": "no index in cluster mode",
	"sessions.check": "no index in cluster mode", "sessions.help": "no index in cluster mode",
}

// TestDifferentialCluster runs the differential corpus through the proxy in cluster mode (a
// 3-primary, 3-replica cluster) and against one standalone Redis: the same reply bytes, for
// every case that sends no command Redis Cluster itself refuses (keys in several slots that the
// proxy does not split, SELECT n...) and none whose reply is per node by nature
// (clusterDiffSkips). How many cases ran and were skipped is logged.
func TestDifferentialCluster(t *testing.T) {
	cases := diffLoadCorpus(t)
	cl := redistest.StartCluster(t, 3, 1, "--activerehashing", "no", "--enable-debug-command", "yes")
	ref := redistest.Start(t, "--activerehashing", "no", "--enable-debug-command", "yes")
	fetch := func(ctx context.Context, addr string) ([]cluster.Range, error) {
		return cluster.Fetch(ctx, addr, redis.Options{DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	}
	p := startProxy(t, ref, func(o *Options) {
		o.Cluster = &ClusterOptions{Seeds: cl.Addrs()[:2], Fetch: fetch}
		o.DialTimeout, o.ReadTimeout = 5*time.Second, diffRedisWait
	})
	m, err := cluster.NewMap(must(fetch(context.Background(), cl.Nodes[0].Addr())))
	if err != nil {
		t.Fatal(err)
	}
	table := newCommandTable(connFamily, statefulFamily, sessionsFamily, scriptingFamily)
	refLane := &diffLane{direct: ref.Addr()}
	nc, err := net.DialTimeout("tcp", ref.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	refLane.ctl, refLane.ctlR = nc, bufio.NewReader(nc)
	ran, reordered, skipped := 0, 0, map[string]int{}
	for _, dc := range cases {
		if why := clusterSkip(t, dc, table, m); why != "" {
			skipped[why]++
			continue
		}
		ran++
		t.Run(dc.name, func(t *testing.T) {
			if err := refLane.reset(); err != nil {
				t.Fatal(err)
			}
			want := diffRunSide(ref.Addr(), dc, func(int) time.Duration { return diffRedisWait })
			if err := clusterReset(cl); err != nil {
				t.Fatal(err)
			}
			got := diffRunSide(p.Addr().String(), dc, func(step int) time.Duration {
				if step < len(want) {
					return max(diffProxyMinWait, diffProxyFactor*want[step].took)
				}
				return diffProxyMinWait
			})
			for i := range min(len(want), len(got)) {
				// Hash-table order depends on each redis-server's random hash seed: the same
				// elements in another order are the same reply here.
				if !bytes.Equal(want[i].data, got[i].data) && sameElements(want[i].data, got[i].data) {
					got[i].data = want[i].data
					reordered++
				}
			}
			diffCompare(t, dc, want, got)
		})
	}
	t.Logf("cluster corpus: %d of %d cases ran (%d replies matched up to hash-table order); skipped, by reason: %v",
		ran, len(cases), reordered, skipped)
	if ran < clusterDiffMinCases {
		t.Errorf("only %d of %d cases ran in cluster mode, want at least %d", ran, len(cases), clusterDiffMinCases)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// clusterSkip says why a case cannot be compared with one Redis in cluster mode, or "".
func clusterSkip(t *testing.T, dc *diffCase, table *commandTable, m *cluster.Map) string {
	t.Helper()
	bound := map[string]string{} // connection -> the node its own connection goes to
	inTx := map[string]bool{}    // connection -> in a MULTI the proxy queues
	txSlot := map[string]int{}   // connection -> the slot of its transaction's keys
	norm := map[string]*resp.Normalizer{}
	rest := map[string][]byte{} // connection -> canonical bytes of a command not complete yet
	for _, st := range dc.steps {
		if len(st.send) == 0 {
			continue
		}
		n := norm[st.conn]
		if n == nil {
			n = resp.NewNormalizer(resp.DefaultLimits())
			norm[st.conn] = n
		}
		canon, _ := n.Feed(rest[st.conn], st.send) // a protocol error: the commands before it
		cmds, used := splitCommands(canon)
		rest[st.conn] = append([]byte(nil), canon[used:]...)
		for _, args := range cmds {
			spec := table.lookup(args[0])
			if why, ok := clusterDiffSkips[spec.name]; ok {
				return spec.name + ": " + why
			}
			if spec.name == "sort" || spec.name == "sort_ro" {
				for _, a := range args[2:] {
					if equalFold(a, "BY") || equalFold(a, "GET") {
						return "SORT BY/GET: refused by Redis Cluster"
					}
				}
			}
			if (spec.name == "unsubscribe" || spec.name == "punsubscribe") && len(args) == 1 {
				return "UNSUBSCRIBE of everything: in the node's hash-table order"
			}
			var keys [16]int
			pos := spec.keyPositions(keys[:0], args)
			for _, p := range pos {
				if cluster.Slot(args[p]) != cluster.Slot(args[pos[0]]) {
					return "refused or cross-slot in a cluster"
				}
			}
			if node := bound[st.conn]; node != "" {
				// On its own connection the client reaches one node: Redis answers -MOVED for
				// another's keys, and MULTI is Redis' own there.
				for _, p := range pos {
					if m.Node(cluster.Slot(args[p])) != node {
						return "keys of another node on a connection bound to one"
					}
				}
				continue
			}
			switch {
			case spec.name == "multi" && len(args) == 1:
				inTx[st.conn], txSlot[st.conn] = true, -1
				continue
			case (spec.name == "exec" || spec.name == "discard") && len(args) == 1:
				inTx[st.conn] = false
				continue
			case inTx[st.conn]:
				if r := spec.routeOf(args); r == routeLocal || r == routeDedicated && !spec.keys.any() {
					return "connection commands inside MULTI: refused in cluster mode (README)"
				}
				for _, p := range pos {
					if s := cluster.Slot(args[p]); txSlot[st.conn] < 0 {
						txSlot[st.conn] = s
					} else if s != txSlot[st.conn] {
						return "a transaction across slots: Redis Cluster refuses it"
					}
				}
				continue
			}
			es, _ := clusterPlan(nil, nil, spec, args, nil, m)
			if es[0].hasReply {
				return "refused or cross-slot in a cluster"
			}
			if es[0].dedicated != "" {
				bound[st.conn] = es[0].dedicated
			}
		}
	}
	return ""
}

// splitCommands parses the complete canonical multibulk commands in b (the normalizer's
// output) and says how many bytes they took; a command cut off at the end is left.
func splitCommands(b []byte) ([][][]byte, int) {
	var out [][][]byte
	used := 0
	for len(b) > 0 {
		l, err := resp.ReplyLen(b) // a canonical command is a well-formed array of bulks
		if err != nil {
			return out, used
		}
		elems, ok := resp.SplitArray(nil, b[:l])
		if !ok || len(elems) == 0 {
			return out, used
		}
		args := make([][]byte, len(elems))
		for i, e := range elems {
			args[i] = bulkBody(e)
		}
		out = append(out, args)
		b, used = b[l:], used+l
	}
	return out, used
}

// clusterReset empties every primary of the cluster (the replicas follow).
func clusterReset(cl *redistest.Cluster) error {
	for _, n := range cl.Nodes {
		role, err := n.DoText("ROLE")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(role, "master") {
			continue
		}
		for _, c := range [][]string{{"FLUSHALL", "SYNC"}, {"SCRIPT", "FLUSH", "SYNC"}, {"FUNCTION", "FLUSH", "SYNC"}} {
			if out, err := n.DoText(c...); err != nil || out != "OK" {
				return fmt.Errorf("%s %v: %q %v", n.Addr(), c, out, err)
			}
		}
	}
	return nil
}

// sameElements reports whether a and b are replies (one or more, back to back) that differ only
// in the order of array elements, at any depth.
func sameElements(a, b []byte) bool {
	ca, oka := canonOrder(a)
	cb, okb := canonOrder(b)
	return oka && okb && ca == cb
}

// canonOrder is the replies in b with every array's elements sorted, recursively.
func canonOrder(b []byte) (string, bool) {
	var out []string
	for len(b) > 0 {
		l, err := resp.ReplyLen(b)
		if err != nil {
			return "", false
		}
		elems, ok := resp.SplitArray(nil, b[:l])
		if !ok {
			out = append(out, string(b[:l]))
		} else {
			parts := make([]string, len(elems))
			for i, e := range elems {
				if parts[i], ok = canonOrder(e); !ok {
					return "", false
				}
			}
			slices.Sort(parts)
			out = append(out, fmt.Sprintf("[%d]", len(parts))+strings.Join(parts, ""))
		}
		b = b[l:]
	}
	return strings.Join(out, ""), true
}
