package proxy

import (
	"strings"
	"testing"

	"github.com/sessionproxy/sessionproxy/internal/cluster"
	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// TestClusterPlan: the pure planning step of cluster mode, command by command: which node
// each part goes to, its bytes, and what the proxy answers itself. Three primaries split the
// slots as redis-cli --cluster create does.
func TestClusterPlan(t *testing.T) {
	m, err := cluster.NewMap([]cluster.Range{{Start: 0, End: 5460, Primary: "a:1"},
		{Start: 5461, End: 10922, Primary: "b:1"}, {Start: 10923, End: 16383, Primary: "c:1"}})
	if err != nil {
		t.Fatal(err)
	}
	table := newCommandTable(connFamily, statefulFamily, sessionsFamily, scriptingFamily)
	// Slots (CLUSTER KEYSLOT): foo 12182 (c), bar 5061 (a), session:10 6137 (b), {user1000}.x 3443 (a).
	for _, tc := range []struct {
		cmd   []string
		parts []string // "node cmd args..." per part
		reply string   // the proxy's own answer, if any
		local bool
		node  string // the node of the client's dedicated connection from here on
	}{
		{cmd: []string{"GET", "foo"}, parts: []string{"c:1 GET foo"}},
		{cmd: []string{"get", "bar"}, parts: []string{"a:1 get bar"}},
		{cmd: []string{"MGET", "foo", "bar", "session:10", "{user1000}.x"},
			parts: []string{"c:1 MGET foo", "a:1 MGET bar", "b:1 MGET session:10", "a:1 MGET {user1000}.x"}},
		{cmd: []string{"MGET", "{t}a", "{t}b"}, parts: []string{"c:1 MGET {t}a {t}b"}},
		{cmd: []string{"MSET", "foo", "1", "bar", "2", "foo", "3"}, parts: []string{"c:1 MSET foo 1 foo 3", "a:1 MSET bar 2"}},
		{cmd: []string{"DEL", "foo", "bar"}, parts: []string{"c:1 DEL foo", "a:1 DEL bar"}},
		// Without a value for its last key: whole to a node, which answers as a cluster node
		// does (a split once sliced past the arguments and took the process down).
		{cmd: []string{"MSET", "foo", "1", "bar"}, parts: []string{"c:1 MSET foo 1 bar"}},
		{cmd: []string{"SUNION", "foo", "bar"}, reply: errCrossSlot},
		{cmd: []string{"DBSIZE"}, parts: []string{"a:1 DBSIZE", "b:1 DBSIZE", "c:1 DBSIZE"}},
		{cmd: []string{"SCRIPT", "LOAD", "return 1"}, parts: []string{"a:1 SCRIPT LOAD return 1", "b:1 SCRIPT LOAD return 1", "c:1 SCRIPT LOAD return 1"}},
		{cmd: []string{"PING"}, parts: []string{"a:1 PING"}},
		{cmd: []string{"SCAN", "0", "COUNT", "5"}, parts: []string{"a:1 SCAN 0 COUNT 5"}},
		{cmd: []string{"SCAN", "14"}, parts: []string{"c:1 SCAN 4"}}, // 14 = 4*3 + 2
		{cmd: []string{"EVAL", "return 1", "1", "foo"}, parts: []string{"c:1 EVAL return 1 1 foo"}},
		{cmd: []string{"EVAL", "return 1", "2", "foo", "bar"}, reply: errCrossSlot},
		{cmd: []string{"MONITOR"}, reply: "-ERR MONITOR is not available through sessionproxy in cluster mode yet\r\n"},
		{cmd: []string{"WAIT", "1", "0"}, reply: "-ERR WAIT is not available through sessionproxy in cluster mode yet\r\n"},
		{cmd: []string{"BLPOP", "foo", "bar", "0"}, reply: errCrossSlot},
		{cmd: []string{"BLPOP", "foo", "0"}, node: "c:1"},
		{cmd: []string{"WATCH", "bar", "{user1000}.x"}, reply: errCrossSlot},
		{cmd: []string{"WATCH", "bar"}, node: "a:1"},
		{cmd: []string{"SUBSCRIBE", "ch"}, node: "a:1"},
		{cmd: []string{"SESSIONS.LIST", "100"}, reply: "-ERR SESSIONS commands need the cluster index in cluster mode (index.cluster: true)\r\n"},
		{cmd: []string{"SELECT", "1"}, local: true},
		{cmd: []string{"AUTH", "pw"}, local: true},
	} {
		args := make([][]byte, len(tc.cmd))
		for i, a := range tc.cmd {
			args[i] = []byte(a)
		}
		raw := resp.AppendCommand(nil, tc.cmd...)
		es, ps := clusterPlan(nil, nil, table.lookup(args[0]), args, raw, m)
		if len(es) != 1 {
			t.Fatalf("%q: %d entries", tc.cmd, len(es))
		}
		e := es[0]
		if e.dedicated != tc.node {
			t.Errorf("%q: dedicated to %q, want %q", tc.cmd, e.dedicated, tc.node)
		}
		if (e.local != nil) != tc.local || string(e.reply) != tc.reply || (tc.reply != "") != e.hasReply {
			t.Errorf("%q: local %v reply %q, want local %v reply %q", tc.cmd, e.local != nil, e.reply, tc.local, tc.reply)
		}
		var got []string
		for _, p := range ps[e.first : e.first+e.n] {
			got = append(got, p.node+" "+decodeArgs(t, p.raw))
		}
		if strings.Join(got, "|") != strings.Join(tc.parts, "|") {
			t.Errorf("%q: parts %q, want %q", tc.cmd, got, tc.parts)
		}
	}
}

// decodeArgs turns one encoded command back into its words.
func decodeArgs(t *testing.T, raw []byte) string {
	t.Helper()
	var words []string
	lines := strings.Split(string(raw), "\r\n")
	for i := 2; i < len(lines); i += 2 {
		words = append(words, lines[i])
	}
	return strings.Join(words, " ")
}

// TestClusterMerge: golden bytes of the merged replies.
func TestClusterMerge(t *testing.T) {
	for _, tc := range []struct {
		name  string
		e     centry
		parts []string
		want  string
	}{
		{"sum", centry{op: opSum, n: 3}, []string{":1\r\n", ":0\r\n", ":2\r\n"}, ":3\r\n"},
		{"sum with an error", centry{op: opSum, n: 2}, []string{":1\r\n", "-ERR x\r\n"}, "-ERR x\r\n"},
		{"all ok", centry{op: opAllOK, n: 2}, []string{"+OK\r\n", "+OK\r\n"}, "+OK\r\n"},
		{"pick", centry{op: opPick, n: 2, picks: []cpick{{0, 0}, {1, 0}, {0, 1}}},
			[]string{"*2\r\n$1\r\na\r\n$-1\r\n", "*1\r\n$1\r\nb\r\n"}, "*3\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n"},
		{"pick resp3", centry{op: opPick, n: 1, picks: []cpick{{0, 1}, {0, 0}}},
			[]string{"*2\r\n_\r\n$1\r\nz\r\n"}, "*2\r\n$1\r\nz\r\n_\r\n"},
		{"concat", centry{op: opConcat, n: 2}, []string{"*1\r\n$1\r\na\r\n", "*0\r\n"}, "*1\r\n$1\r\na\r\n"},
		{"and", centry{op: opAnd, n: 2}, []string{"*2\r\n:1\r\n:1\r\n", "*2\r\n:1\r\n:0\r\n"}, "*2\r\n:1\r\n:0\r\n"},
		{"scan, more on the node", centry{op: opScan, n: 1, scanNode: 1, scanNodes: 3},
			[]string{"*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n"}, "*2\r\n$2\r\n52\r\n*1\r\n$1\r\nk\r\n"},
		{"scan, node done", centry{op: opScan, n: 1, scanNode: 1, scanNodes: 3},
			[]string{"*2\r\n$1\r\n0\r\n*0\r\n"}, "*2\r\n$1\r\n2\r\n*0\r\n"},
		{"scan, last node done", centry{op: opScan, n: 1, scanNode: 2, scanNodes: 3},
			[]string{"*2\r\n$1\r\n0\r\n*0\r\n"}, "*2\r\n$1\r\n0\r\n*0\r\n"},
	} {
		parts := make([][]byte, len(tc.parts))
		for i, p := range tc.parts {
			parts[i] = []byte(p)
		}
		if got := string(mergeReplies(nil, tc.e, parts, 0)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestClusterPartReply: a transaction's -MOVED is found whichever queued command got it, so the
// whole block goes to the slot's new owner.
func TestClusterPartReply(t *testing.T) {
	req := &request{}
	for _, r := range []string{"+OK\r\n", "+QUEUED\r\n", "-MOVED 42 n:1\r\n", "-EXECABORT x\r\n"} {
		req.reply = append(req.reply, r...)
		req.ends = append(req.ends, len(req.reply))
	}
	if got := string(partReply(req, 0, cpart{extra: 3, use: 3})); got != "-MOVED 42 n:1\r\n" {
		t.Errorf("transaction reply %q, want the -MOVED", got)
	}
	req.reply, req.ends = req.reply[:0], req.ends[:0]
	for _, r := range []string{"+OK\r\n", "+QUEUED\r\n", "+QUEUED\r\n", "*2\r\n:1\r\n:2\r\n"} {
		req.reply = append(req.reply, r...)
		req.ends = append(req.ends, len(req.reply))
	}
	if got := string(partReply(req, 0, cpart{extra: 3, use: 3})); got != "*2\r\n:1\r\n:2\r\n" {
		t.Errorf("transaction reply %q, want EXEC's", got)
	}
}
