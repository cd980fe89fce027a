package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/cluster"
	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// ClusterOptions put the proxy in front of a Redis Cluster (README "Cluster").
type ClusterOptions struct {
	Seeds []string // nodes to read the slot map from at first, host:port
	// Fetch reads the slot ranges from the node at addr (CLUSTER SLOTS).
	Fetch func(ctx context.Context, addr string) ([]cluster.Range, error)
	// Index, when set, keeps the session index across the cluster (README "Guarantees on Redis
	// Cluster"); nil: session writes pass unindexed and SESSIONS.* are refused.
	Index ClusterIndex
}

// ClusterIndex is the other half of the session index on a cluster (reaper.Cluster): the proxy
// runs each session write with its slot's bookkeeping in one script, and the index applies the
// index changes that script queued.
type ClusterIndex interface {
	// Dirty says a session write just ran in slot: its outbox has changes to apply.
	Dirty(slot int)
	// Sessions answers SESSIONS.LIST/COUNT/REVOKE (mode list|count|revoke) for uid under rule r.
	Sessions(ctx context.Context, mode string, r int, uid string) ([]string, int64, error)
}

// clusterRefresh is how often the slot map is read again without a redirect asking for it;
// clusterRefreshGap is the least time between two reads (a burst of -MOVED reads it once).
const (
	clusterRefresh    = 5 * time.Second
	clusterRefreshGap = 100 * time.Millisecond
	clusterRedirects  = 5 // -MOVED/-ASK followed per command before its reply is relayed as is
	// clusterTryAgain, clusterTryAgainFor: a session write's -TRYAGAIN (followRedirects).
	clusterTryAgain    = 10 * time.Millisecond
	clusterTryAgainFor = 2 * time.Second
)

// clusterState is the slot map and its refreshing.
type clusterState struct {
	opts  ClusterOptions
	m     atomic.Pointer[cluster.Map]
	reads prometheus.Counter // slot maps read
	// addr is the dialer's address: the proxy's own one-off questions (AUTH, HELLO, SELECT
	// checks, readiness) go to the first primary of the current map.
	addr *atomic.Pointer[string]

	mu   sync.Mutex // one read of the map at a time
	last time.Time
}

// refresh reads the slot map from hint (a node a redirect named), the known primaries, or the
// seeds, the first that answers with a map. Reads closer together than clusterRefreshGap are
// skipped: the one just made serves.
func (cs *clusterState) refresh(ctx context.Context, hint string) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if time.Since(cs.last) < clusterRefreshGap {
		return nil
	}
	cands := []string{}
	if hint != "" {
		cands = append(cands, hint)
	}
	if m := cs.m.Load(); m != nil {
		cands = append(cands, m.Primaries()...)
	}
	cands = append(cands, cs.opts.Seeds...)
	var errs []error
	for _, a := range cands {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ranges, err := cs.opts.Fetch(fctx, a)
		cancel()
		if err == nil {
			var m *cluster.Map
			if m, err = cluster.NewMap(ranges); err == nil {
				cs.m.Store(m)
				cs.reads.Inc()
				first := m.Primaries()[0]
				cs.addr.Store(&first)
				cs.last = time.Now()
				return nil
			}
		}
		errs = append(errs, err)
	}
	cs.last = time.Now()
	return fmt.Errorf("cluster: no slot map: %w", errors.Join(errs...))
}

// watch reads the map every clusterRefresh until ctx ends.
func (cs *clusterState) watch(ctx context.Context) {
	t := time.NewTicker(clusterRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = cs.refresh(ctx, "")
		}
	}
}

// mergeOp says how the replies of a command's parts make the client's one reply.
type mergeOp uint8

const (
	opOne        mergeOp = iota // one part: its reply as it is
	opSum                       // integers added (DEL, EXISTS, DBSIZE...)
	opAllOK                     // +OK unless a part failed (MSET, FLUSHDB)
	opPick                      // array elements picked back into key order (MGET)
	opConcat                    // arrays joined (KEYS)
	opSame                      // the first part's reply unless one failed (SCRIPT LOAD)
	opAnd                       // arrays of 0/1 ANDed element-wise (SCRIPT EXISTS)
	opFirstValue                // the first reply that is not a null (RANDOMKEY)
	opScan                      // a SCAN on one node: its cursor re-encoded with the node
	opMin                       // the least integer (WAIT: replicas that have every write)
)

// centry is one client command of a cluster batch: answered by the proxy (reply, or local),
// or sent as parts[first:first+n] whose replies op merges.
type centry struct {
	reply     []byte
	local     *cmdSpec
	args      [][]byte
	op        mergeOp
	first, n  int
	picks     []cpick // opPick: where each key's element is
	scanNode  int     // opScan: the primary's index
	scanNodes int     // opScan: how many primaries the cursor counts
	hasReply  bool
	info      bool   // INFO of the default sections: the proxy's own is added (cmd_info.go)
	dedicated string // the client moves to its own connection to this node from here on
	// txCheck: the reply is Redis' verdict on queuing a command of this transaction; an error
	// dooms it (EXEC answers EXECABORT), as Redis flags a transaction.
	txCheck *clusterTx
}

// cpick: element elem of part part's array reply.
type cpick struct{ part, elem int }

// cpart is a command for one node: raw holds 1+extra commands (a queued transaction: MULTI,
// its commands, EXEC; a queue-time check: MULTI, the command, DISCARD), of whose replies the
// use-th is the part's.
type cpart struct {
	node   string
	raw    []byte
	extra  int
	use    int
	script bool // a client's script call: others must not wait behind it (request.script)
	// args: a split command's part, its own arguments (planSplit); nil: the client's.
	args [][]byte
	// session: raw is a session write rewritten to the cluster apply script (by SHA unless
	// extra > 0) with the bookkeeping of slot; its outbox has changes once it ran.
	session bool
	slot    int
	wait    bool // a WAIT: its node is not one the client sent commands to
}

// errClusterUnsupported is the reply for a command the cluster mode does not carry yet.
func errClusterUnsupported(name []byte) []byte {
	return redcon.AppendError(nil, "ERR "+strings.ToUpper(string(name))+
		" is not available through sessionproxy in cluster mode yet")
}

// Redis Cluster's own replies.
const (
	errCrossSlot   = "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
	errClusterDown = "-CLUSTERDOWN Hash slot not served\r\n"
)

// splitOps: multi-key commands split by slot when their keys span slots, and how their
// replies merge. Every other multi-key command gets -CROSSSLOT then, as from Redis Cluster.
var splitOps = map[string]mergeOp{"mget": opPick, "mset": opAllOK, "del": opSum, "unlink": opSum,
	"exists": opSum, "touch": opSum}

// fanOps: keyless commands that concern the whole keyspace, sent to every primary.
var fanOps = map[string]mergeOp{"dbsize": opSum, "keys": opConcat, "flushdb": opAllOK,
	"flushall": opAllOK, "randomkey": opFirstValue}

// fanSubOps: the same for subcommands (SCRIPT LOAD...), keyed "command subcommand".
var fanSubOps = map[string]mergeOp{"script load": opSame, "script flush": opAllOK, "script exists": opAnd,
	"function load": opSame, "function flush": opAllOK, "function delete": opAllOK,
	"function restore": opAllOK}

// clusterPlan plans one client command for the cluster: it appends its entry (and parts) to
// es (ps). Pure: it reads the command table and the slot map only.
func clusterPlan(es []centry, ps []cpart, spec *cmdSpec, args [][]byte, raw []byte, m *cluster.Map) ([]centry, []cpart) {
	if spec.name == "multi" && len(args) != 1 { // Redis answers the arity error
		return append(es, centry{op: opOne, first: len(ps), n: 1}), append(ps, cpart{node: m.Primaries()[0], raw: raw})
	}
	switch r := spec.routeOf(args); {
	case spec.sessions:
		return append(es, centry{hasReply: true, reply: redcon.AppendError(nil,
			"ERR SESSIONS commands need the cluster index in cluster mode (index.cluster: true)")}), ps
	case r == routeLocal:
		return append(es, centry{local: spec, args: args}), ps
	case r == routeDedicated:
		node, reply := dedicatedNode(spec, args, m)
		if reply != nil {
			return append(es, centry{hasReply: true, reply: reply}), ps
		}
		return append(es, centry{dedicated: node}), ps
	}
	primaries := m.Primaries()
	var keys [16]int
	pos := spec.keyPositions(keys[:0], args)
	if len(pos) == 0 {
		op, fan := fanOps[spec.name]
		if len(args) > 1 && (spec.name == "script" || spec.name == "function") {
			if sop, ok := fanSubOps[spec.name+" "+strings.ToLower(string(args[1]))]; ok {
				op, fan = sop, true
			}
		}
		switch {
		case spec.name == "scan":
			return planScan(es, ps, args, raw, primaries)
		case fan:
			e := centry{op: op, first: len(ps), n: len(primaries)}
			for _, a := range primaries {
				ps = append(ps, cpart{node: a, raw: raw})
			}
			return append(es, e), ps
		}
		// Anything else keyless (PING, INFO, CLUSTER ..., PUBLISH, EVAL without keys...) goes to
		// one node.
		return append(es, centry{op: opOne, first: len(ps), n: 1, info: fullInfo(args)}),
			append(ps, cpart{node: primaries[0], raw: raw, script: spec.script})
	}
	slot, cross := cluster.Slot(args[pos[0]]), false
	for _, p := range pos[1:] {
		if cluster.Slot(args[p]) != slot {
			cross = true
			break
		}
	}
	if !cross {
		node := m.Node(slot)
		if node == "" {
			return append(es, centry{hasReply: true, reply: []byte(errClusterDown)}), ps
		}
		return append(es, centry{op: opOne, first: len(ps), n: 1}), append(ps, cpart{node: node, raw: raw, script: spec.script})
	}
	op, ok := splitOps[spec.name]
	if !ok {
		return append(es, centry{hasReply: true, reply: []byte(errCrossSlot)}), ps
	}
	if op == opAllOK && len(args)%2 == 0 { // MSET without a value for its last key
		// Not split: the node of its first key answers as a cluster node does (-CROSSSLOT).
		return append(es, centry{op: opOne, first: len(ps), n: 1}), append(ps, cpart{node: m.Node(slot), raw: raw})
	}
	return planSplit(es, ps, op, args, pos, m)
}

// planWait plans WAIT, once everything before it has run: it goes to every node the client has
// sent commands to since its last WAIT (or the first primary), on the client's shared connection
// to each, which carried them: a connection's WAIT waits for its latest write, so for the
// client's too. The reply is the least count. As a script call, it does not hold up the clients
// behind it on that connection for longer than the busy threshold (request.script).
func (c *client) planWait(es []centry, ps []cpart, raw []byte, m *cluster.Map) ([]centry, []cpart) {
	var nodes []string
	primaries := m.Primaries()
	for _, n := range c.wrote {
		// A node that is no longer a primary (failed over) cannot be waited on; its slots'
		// writes are on the new primary now, or lost, as for a direct client.
		if slices.Contains(primaries, n) {
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		nodes = m.Primaries()[:1]
	}
	e := centry{op: opMin, first: len(ps), n: len(nodes)}
	for _, n := range nodes {
		ps = append(ps, cpart{node: n, raw: raw, script: true, wait: true})
	}
	c.wrote = c.wrote[:0]
	return append(es, e), ps
}

// dedicatedOn says which commands that need a connection of their own the cluster mode carries,
// and to which node: "keys" the primary of their keys' slot (blocking commands, WATCH, the
// shard channels of SSUBSCRIBE), "any" the first primary (SUBSCRIBE: every node receives
// every PUBLISH of the cluster).
var dedicatedOn = map[string]string{"blpop": "keys", "brpop": "keys", "brpoplpush": "keys", "blmove": "keys",
	"blmpop": "keys", "bzpopmin": "keys", "bzpopmax": "keys", "bzmpop": "keys", "xread": "keys",
	"xreadgroup": "keys", "watch": "keys", "ssubscribe": "keys", "sunsubscribe": "keys",
	"subscribe": "any", "psubscribe": "any", "unsubscribe": "any", "punsubscribe": "any"}

// dedicatedNode is the node a command moving the client to its own connection goes to, or the
// reply when it cannot go anywhere (its keys span slots, or the mode does not carry it).
func dedicatedNode(spec *cmdSpec, args [][]byte, m *cluster.Map) (string, []byte) {
	switch dedicatedOn[spec.name] {
	case "any":
		return m.Primaries()[0], nil
	case "keys":
		var keys [16]int
		pos := spec.keyPositions(keys[:0], args)
		if len(pos) == 0 { // e.g. SUNSUBSCRIBE of everything, or an arity error Redis answers
			return m.Primaries()[0], nil
		}
		slot := cluster.Slot(args[pos[0]])
		for _, p := range pos[1:] {
			if cluster.Slot(args[p]) != slot {
				return "", []byte(errCrossSlot)
			}
		}
		if node := m.Node(slot); node != "" {
			return node, nil
		}
		return "", []byte(errClusterDown)
	}
	return "", errClusterUnsupported(args[0])
}

// planSplit splits a multi-key command by slot: one command per slot with its keys (and their
// values, for MSET) in the client's order.
func planSplit(es []centry, ps []cpart, op mergeOp, args [][]byte, pos []int, m *cluster.Map) ([]centry, []cpart) {
	step := 1
	if op == opAllOK { // MSET: key value pairs
		step = 2
	}
	e := centry{op: op, first: len(ps)}
	type group struct {
		slot int
		args [][]byte
	}
	var groups []group
	for _, p := range pos {
		s := cluster.Slot(args[p])
		g := -1
		for i := range groups {
			if groups[i].slot == s {
				g = i
				break
			}
		}
		if g < 0 {
			if m.Node(s) == "" {
				return append(es, centry{hasReply: true, reply: []byte(errClusterDown)}), ps
			}
			g = len(groups)
			groups = append(groups, group{slot: s, args: [][]byte{args[0]}})
		}
		if op == opPick {
			e.picks = append(e.picks, cpick{part: e.first + g, elem: len(groups[g].args) - 1})
		}
		groups[g].args = append(groups[g].args, args[p:p+step]...)
	}
	for _, g := range groups {
		ps = append(ps, cpart{node: m.Node(g.slot), raw: appendArgs(nil, g.args), args: g.args})
	}
	e.n = len(groups)
	return append(es, e), ps
}

// planScan sends a SCAN to the primary its cursor names: the proxy's cursor is the node's
// cursor times the number of primaries, plus the primary's index.
func planScan(es []centry, ps []cpart, args [][]byte, raw []byte, primaries []string) ([]centry, []cpart) {
	n := uint64(len(primaries))
	cur, err := strconv.ParseUint(string(args[min(1, len(args)-1)]), 10, 64)
	if len(args) < 2 || err != nil {
		// Redis answers the arity or cursor error itself.
		return append(es, centry{op: opOne, first: len(ps), n: 1}), append(ps, cpart{node: primaries[0], raw: raw})
	}
	node := int(cur % n)
	sub := append([][]byte{args[0], []byte(strconv.FormatUint(cur/n, 10))}, args[2:]...)
	return append(es, centry{op: opScan, first: len(ps), n: 1, scanNode: node, scanNodes: len(primaries)}),
		append(ps, cpart{node: primaries[node], raw: appendArgs(nil, sub)})
}

// appendArgs encodes args as one RESP command.
func appendArgs(dst []byte, args [][]byte) []byte {
	dst = redcon.AppendArray(dst, len(args))
	for _, a := range args {
		dst = redcon.AppendBulk(dst, a)
	}
	return dst
}

// runCluster carries out one batch in cluster mode: each command goes to the primary of its
// keys' slot (split by slot, or to every primary, where the command asks for it), one request
// per node for the batch, and the replies go back in the client's order.
func (c *client) runCluster(cmds []redcon.Command) {
	cs := c.s.cluster
	m := cs.m.Load()
	if m == nil {
		err := cs.refresh(c.s.ctx, "")
		if m = cs.m.Load(); m == nil {
			if err == nil { // a read just failed; it is not tried again within clusterRefreshGap
				err = errors.New("no slot map yet")
			}
			c.fail(len(cmds), fmt.Errorf("upstream unavailable: %w", err))
			return
		}
	}
	es, ps := c.centries[:0], c.cparts[:0]
	for i := range cmds {
		spec := c.s.table.lookup(cmds[i].Args[0])
		c.s.m.commands[spec.idx].Inc()
		var handled bool
		if es, ps, handled = c.clusterTxStep(es, ps, spec, cmds[i].Args, cmds[i].Raw, m); handled {
			continue
		}
		if spec.name == "exec" && c.tx != nil {
			if len(ps) > 0 { // the verdicts on queuing come first: they may doom the transaction
				c.execCluster(es, ps)
				if c.closing {
					return
				}
				es, ps = es[:0], ps[:0]
			}
			es, ps = c.tx.plan(es, ps, m)
			c.tx = nil
			continue
		}
		if spec.name == "wait" && c.tx == nil && len(cmds[i].Args) == 3 {
			// Everything before it runs first, redirects and retries included.
			c.execCluster(es, ps)
			if c.closing {
				return
			}
			es, ps = c.planWait(es[:0], ps[:0], cmds[i].Raw, m)
			c.execCluster(es, ps)
			if c.closing {
				return
			}
			es, ps = es[:0], ps[:0]
			continue
		}
		index := cs.opts.Index
		if index != nil && spec.sessions && classifySessions(cmds[i].Args) == routeShared {
			c.execCluster(es, ps) // what comes before it in the pipeline is in the index first
			if c.closing {
				return
			}
			es, ps = es[:0], ps[:0]
			c.write(c.clusterSessions(spec, cmds[i].Args))
			continue
		}
		if spec.plan != nil && index == nil {
			// A session write passes plain, and is counted.
			if c.refs = spec.plan(c.ix.schema, c.refs[:0], cmds[i].Args); len(c.refs) > 0 {
				c.s.unindexed("session write passed unindexed: the cluster index is off (index.cluster)", "cmd", spec.name)
			}
		}
		before := len(ps)
		es, ps = clusterPlan(es, ps, spec, cmds[i].Args, cmds[i].Raw, m)
		if index != nil && spec.plan != nil {
			for k := before; k < len(ps); k++ {
				ps[k] = c.clusterRewrite(ps[k], spec, cmds[i].Args, cmds[i].Raw)
			}
		}
		if node := es[len(es)-1].dedicated; node != "" {
			c.execCluster(es[:len(es)-1], ps)
			if !c.closing {
				c.node = node // its commands from here on go to node, on a connection of its own
				c.toDedicated(cmds[i:])
			}
			return
		}
		if es[len(es)-1].local != nil {
			c.execCluster(es[:len(es)-1], ps)
			if c.closing {
				return
			}
			e := es[len(es)-1]
			e.local.local(c, e.args)
			if c.closing {
				return
			}
			es, ps = es[:0], ps[:0]
		}
	}
	c.execCluster(es, ps)
	clear(es)
	clear(ps)
	c.centries, c.cparts = es[:0], ps[:0]
}

// execCluster sends the parts, follows redirects, merges and writes the entries' replies.
func (c *client) execCluster(es []centry, ps []cpart) {
	if len(es) == 0 {
		return
	}
	c.handedOff() // requests to several nodes keep no order with other clients' (README)
	replies := c.creplies[:0]
	for range ps {
		replies = append(replies, nil)
	}
	// The parts by node, in order; most batches have one node.
	nodes, byNode := c.cnodes[:0], c.cbyNode[:0]
	for i, p := range ps {
		k := slices.Index(nodes, p.node)
		if k < 0 {
			k = len(nodes)
			nodes = append(nodes, p.node)
			if k < len(c.cbyNode) {
				byNode = append(byNode, c.cbyNode[k][:0])
			} else {
				byNode = append(byNode, nil)
			}
		}
		byNode[k] = append(byNode[k], i)
	}
	c.cnodes, c.cbyNode = nodes, byNode
	for _, p := range ps {
		if !p.wait && !slices.Contains(c.wrote, p.node) {
			c.wrote = append(c.wrote, p.node)
		}
	}
	if len(nodes) > 0 {
		c.nodeRequest(len(nodes) - 1) // all made here: send runs on several goroutines
	}
	send := func(k int) {
		node, idx := nodes[k], byNode[k]
		req := c.nodeRequest(k)
		req.cmds, req.script = req.cmds[:0], false
		for _, i := range idx {
			req.script = req.script || ps[i].script
			req.cmds = append(req.cmds, redcon.Command{Raw: ps[i].raw})
			for range ps[i].extra { // one more reply each; the bytes are all in the first Raw
				req.cmds = append(req.cmds, redcon.Command{})
			}
		}
		err := c.doNode(node, req)
		if err != nil {
			req.err = err
			req.reply, req.ends = req.reply[:0], req.ends[:0]
		}
		req.fillLost()
		j := 0
		for _, i := range idx {
			replies[i] = partReply(req, j, ps[i])
			j += 1 + ps[i].extra
		}
	}
	switch len(nodes) {
	case 0:
	case 1:
		send(0)
	default:
		var wg sync.WaitGroup
		for k := range nodes {
			wg.Go(func() { send(k) })
		}
		wg.Wait()
	}
	for i := range ps {
		replies[i] = c.followRedirects(ps[i], replies[i])
		if ps[i].session {
			replies[i] = c.retryClusterNoScript(ps[i], replies[i])
			c.s.cluster.opts.Index.Dirty(ps[i].slot)
		}
	}
	for _, e := range es {
		switch {
		case e.hasReply:
			c.write(e.reply)
		case e.op == opOne:
			if e.txCheck != nil && len(replies[e.first]) > 0 && replies[e.first][0] == '-' {
				e.txCheck.bad = true
			}
			if e.info && e.txCheck == nil {
				c.write(c.s.withProxySection(replies[e.first]))
				continue
			}
			c.write(replies[e.first])
		default:
			c.merged = mergeReplies(c.merged[:0], e, replies[e.first:e.first+e.n], e.first)
			c.write(c.merged)
		}
	}
	clear(replies)
	c.creplies = replies[:0]
}

// nodeRequest is the client's reusable request for the k-th node of a batch.
func (c *client) nodeRequest(k int) *request {
	for len(c.creqs) <= k {
		c.creqs = append(c.creqs, &request{done: newDone()})
	}
	return c.creqs[k]
}

// doNode runs req over the client's shared connection to node.
func (c *client) doNode(node string, req *request) error {
	p, err := c.s.pools.get(poolKey{id: c.ident, resp3: c.resp3, node: node})
	if err != nil {
		return err
	}
	for attempt, moves := 0, 0; ; {
		u, err := p.conn(c.s.ctx, c.id)
		if err != nil {
			_ = c.s.cluster.refresh(c.s.ctx, "") // a node down: its slots may have moved
			return err
		}
		switch err := u.do(req); {
		case err == errMoved && moves < maxMoves:
			moves++
		case err == errNotSent && attempt == 0:
			attempt++
		case err != nil:
			return ErrUpstreamLost
		default:
			return nil
		}
	}
}

// followRedirects resends a part that Redis answered -MOVED (the slot has a new owner: read the
// map again) or -ASK (the slot is migrating: ASKING, then the command, at the target), up to
// clusterRedirects times, and returns the final reply.
//
// A session write rewritten to the cluster apply script names several keys of its slot (the
// session and the slot's bookkeeping), so while the slot migrates Redis may answer -TRYAGAIN
// (some of them moved already), which the plain one-key command never gets: it is sent again,
// where it last went, every clusterTryAgain for up to clusterTryAgainFor.
func (c *client) followRedirects(p cpart, reply []byte) []byte {
	node, asking, waited := p.node, false, time.Duration(0)
	for redirects := 0; redirects < clusterRedirects; {
		var ask, again bool
		var target string
		switch {
		case p.session && p.extra == 0 && bytes.HasPrefix(reply, []byte("-TRYAGAIN")) && waited < clusterTryAgainFor:
			time.Sleep(clusterTryAgain)
			waited += clusterTryAgain
			target, ask, again = node, asking, true
		case bytes.HasPrefix(reply, []byte("-MOVED ")):
		case bytes.HasPrefix(reply, []byte("-ASK ")):
			ask = true
		default:
			return reply
		}
		if target == "" {
			redirects++
			f := strings.Fields(string(reply[1:]))
			if len(f) != 3 {
				return reply
			}
			target = f[2]
		}
		node, asking = target, ask
		if !slices.Contains(c.wrote, target) {
			c.wrote = append(c.wrote, target)
		}
		switch {
		case ask && p.extra > 0:
			return reply // ASKING covers one command, not a transaction: the client sees -ASK
		case again:
			c.s.m.redirects.WithLabelValues("tryagain").Inc()
		case ask:
			c.s.m.redirects.WithLabelValues("ask").Inc()
		default:
			c.s.m.redirects.WithLabelValues("moved").Inc()
			_ = c.s.cluster.refresh(c.s.ctx, target)
		}
		req := &request{done: newDone()}
		if ask {
			req.cmds = []redcon.Command{{Raw: resp.AppendCommand(nil, "ASKING")}, {Raw: p.raw}}
		} else {
			req.cmds = []redcon.Command{{Raw: p.raw}}
			for range p.extra {
				req.cmds = append(req.cmds, redcon.Command{})
			}
		}
		if err := c.doNode(target, req); err != nil {
			return appendLostReply(nil, err)
		}
		req.fillLost()
		reply = partReply(req, len(req.cmds)-1-p.extra, p)
	}
	return reply
}

// partReply is part p's reply in req, whose commands from j on are p's: the use-th of its
// replies; for a MULTI block, a queued command's -MOVED if the slot moved (so that
// followRedirects sends the whole block again).
func partReply(req *request, j int, p cpart) []byte {
	for k := j + 1; k < j+p.extra; k++ { // a MULTI block's queued commands
		if r := req.reply[req.replyStart(k):req.ends[k]]; bytes.HasPrefix(r, []byte("-MOVED ")) {
			return r
		}
	}
	k := j + p.use
	return req.reply[req.replyStart(k):req.ends[k]]
}

// mergeReplies appends the client's reply for e, made from its parts' replies, to dst. A part
// that failed makes the whole reply its error (the first such one), as when one Redis fails a
// command.
func mergeReplies(dst []byte, e centry, parts [][]byte, first int) []byte {
	if e.op == opOne {
		return append(dst, parts[0]...)
	}
	for _, p := range parts {
		if len(p) > 0 && p[0] == '-' && e.op != opFirstValue {
			return append(dst, p...)
		}
	}
	switch e.op {
	case opSum, opMin:
		var sum int64
		for i, p := range parts {
			n, ok := replyInt(p)
			if !ok {
				return append(dst, p...)
			}
			switch {
			case e.op == opSum:
				sum += n
			case i == 0 || n < sum:
				sum = n
			}
		}
		return redcon.AppendInt(dst, sum)
	case opAllOK, opSame:
		return append(dst, parts[0]...)
	case opPick:
		elems := make([][][]byte, len(parts))
		for i, p := range parts {
			var ok bool
			if elems[i], ok = resp.SplitArray(nil, p); !ok {
				return append(dst, p...)
			}
		}
		dst = redcon.AppendArray(dst, len(e.picks))
		for _, pk := range e.picks {
			el := elems[pk.part-first]
			if pk.elem >= len(el) {
				return redcon.AppendError(dst[:0], "ERR upstream sent an unexpected reply")
			}
			dst = append(dst, el[pk.elem]...)
		}
		return dst
	case opConcat:
		var all [][]byte
		for _, p := range parts {
			var ok bool
			if all, ok = resp.SplitArray(all, p); !ok {
				return append(dst, p...)
			}
		}
		dst = redcon.AppendArray(dst, len(all))
		for _, el := range all {
			dst = append(dst, el...)
		}
		return dst
	case opAnd:
		var acc [][]byte
		for i, p := range parts {
			el, ok := resp.SplitArray(nil, p)
			if !ok || (i > 0 && len(el) != len(acc)) {
				return append(dst, p...)
			}
			if i == 0 {
				acc = el
				continue
			}
			for j := range acc {
				if string(el[j]) == ":0\r\n" {
					acc[j] = el[j]
				}
			}
		}
		dst = redcon.AppendArray(dst, len(acc))
		for _, el := range acc {
			dst = append(dst, el...)
		}
		return dst
	case opFirstValue:
		off := rand.IntN(len(parts))
		for i := range parts {
			p := parts[(off+i)%len(parts)]
			if len(p) > 0 && p[0] != '-' && string(p) != replyNilBulk && string(p) != replyNull {
				return append(dst, p...)
			}
		}
		return append(dst, parts[off]...)
	case opScan:
		el, ok := resp.SplitArray(nil, parts[0])
		if !ok || len(el) != 2 {
			return append(dst, parts[0]...)
		}
		nodeCur, err := strconv.ParseUint(string(bulkBody(el[0])), 10, 64)
		if err != nil {
			return append(dst, parts[0]...)
		}
		var cur uint64 // 0 once the last primary is done
		switch n := uint64(e.scanNodes); {
		case nodeCur > (math.MaxUint64-uint64(e.scanNode))/n:
			return redcon.AppendError(dst, "ERR the node's SCAN cursor is too large for the proxy to carry")
		case nodeCur != 0:
			cur = nodeCur*n + uint64(e.scanNode)
		case e.scanNode+1 < e.scanNodes:
			cur = uint64(e.scanNode + 1) // the next primary, from its start
		}
		dst = redcon.AppendArray(dst, 2)
		dst = redcon.AppendBulkString(dst, strconv.FormatUint(cur, 10))
		return append(dst, el[1]...)
	}
	return append(dst, parts[0]...)
}

// replyInt parses an integer reply (":n\r\n").
func replyInt(b []byte) (int64, bool) {
	if len(b) < 4 || b[0] != ':' {
		return 0, false
	}
	return resp.ParseInt(b[1 : len(b)-2])
}

// bulkBody is the data of a bulk string reply ("$n\r\n<data>\r\n"), or b itself.
func bulkBody(b []byte) []byte {
	if len(b) > 0 && b[0] == '$' {
		if i := bytes.IndexByte(b, '\n'); i > 0 && len(b) >= i+3 {
			return b[i+1 : len(b)-2]
		}
	}
	return b
}

// clusterTx is a transaction in cluster mode. Its commands cannot go to a node as they come:
// the node is the one of its keys' slot, known once they are all in. The proxy answers MULTI
// and queues the commands itself (+QUEUED, or the cluster's own -CROSSSLOT when a command's keys
// are not in the slot of the ones before, which makes EXEC fail as Redis Cluster does); EXEC
// sends MULTI, the commands and EXEC to the slot's primary in one write, so nothing of other
// clients runs between them, and relays EXEC's reply.
type clusterTx struct {
	raw  []byte // the queued commands, copied
	n    int
	slot int  // -1 until a command with keys
	bad  bool // a queuing error: EXEC answers EXECABORT
	// session: a queued command is a session write (rewritten): EXEC's part marks the slot's
	// outbox for applying.
	session bool
}

// Redis' replies around a transaction.
const (
	replyQueued    = "+QUEUED\r\n"
	errNestedMulti = "-ERR MULTI calls can not be nested\r\n"
	errWatchInTx   = "-ERR WATCH inside MULTI is not allowed\r\n"
	errExecAbort   = "-EXECABORT Transaction discarded because of previous errors.\r\n"
	errDiscardNoTx = "-ERR DISCARD without MULTI\r\n"
)

// clusterTxStep handles MULTI, DISCARD and the commands queued inside a transaction; handled
// is false for everything else (EXEC included, which runCluster plans with the queue).
func (c *client) clusterTxStep(es []centry, ps []cpart, spec *cmdSpec, args [][]byte, raw []byte, m *cluster.Map) ([]centry, []cpart, bool) {
	tx := c.tx
	reply := func(s string) ([]centry, []cpart, bool) {
		return append(es, centry{hasReply: true, reply: []byte(s)}), ps, true
	}
	switch {
	case spec.name == "multi" && len(args) == 1:
		if tx != nil {
			return reply(errNestedMulti)
		}
		c.tx = &clusterTx{slot: -1}
		return reply(replyOK)
	case tx == nil:
		if spec.name == "discard" && len(args) == 1 {
			return reply(errDiscardNoTx)
		}
		return es, ps, false
	case spec.name == "exec":
		return es, ps, false
	case spec.name == "discard" && len(args) == 1:
		c.tx = nil
		return reply(replyOK)
	case spec.name == "watch":
		return reply(errWatchInTx)
	case spec.name == "quit" || spec.name == "reset":
		return es, ps, false // they end the connection's state, the transaction with it
	}
	r := spec.routeOf(args)
	if r == routeLocal || spec.sessions || (r == routeDedicated && !spec.keys.any()) {
		// The proxy's own state (AUTH, SELECT, CLIENT...) or a connection mode (SUBSCRIBE...)
		// cannot be queued on a shared connection.
		tx.bad = true
		return append(es, centry{hasReply: true, reply: redcon.AppendError(nil, "ERR "+strings.ToUpper(string(args[0]))+
			" inside MULTI is not available through sessionproxy in cluster mode")}), ps, true
	}
	var keys [16]int
	for _, p := range spec.keyPositions(keys[:0], args) {
		s := cluster.Slot(args[p])
		if tx.slot < 0 {
			tx.slot = s
		}
		if s != tx.slot {
			tx.bad = true
			return reply(errCrossSlot)
		}
	}
	if c.s.cluster.opts.Index != nil && spec.plan != nil {
		p := c.clusterRewrite(cpart{raw: raw, extra: 1}, spec, args, raw) // extra: by body, inside MULTI
		raw = p.raw
		if p.session {
			tx.session = true
		}
	}
	tx.raw = append(tx.raw, raw...)
	tx.n++
	// Redis' own verdict on queuing it (+QUEUED, or the error an unknown command, a wrong arity,
	// OOM... get): MULTI, the command, DISCARD on the node, in one write; a batch's queued
	// commands to a node go in one request.
	node := m.Primaries()[0]
	if tx.slot >= 0 {
		if node = m.Node(tx.slot); node == "" {
			tx.bad = true
			return reply(errClusterDown)
		}
	}
	check := resp.AppendCommand(nil, "MULTI")
	check = append(check, raw...)
	check = resp.AppendCommand(check, "DISCARD")
	return append(es, centry{op: opOne, first: len(ps), n: 1, txCheck: tx}),
		append(ps, cpart{node: node, raw: check, extra: 2, use: 1}), true
}

// plan appends EXEC's entry: the whole transaction as one part for its slot's primary.
func (tx *clusterTx) plan(es []centry, ps []cpart, m *cluster.Map) ([]centry, []cpart) {
	switch {
	case tx.bad:
		return append(es, centry{hasReply: true, reply: []byte(errExecAbort)}), ps
	case tx.n == 0:
		return append(es, centry{hasReply: true, reply: []byte("*0\r\n")}), ps
	}
	node := m.Primaries()[0]
	if tx.slot >= 0 {
		if node = m.Node(tx.slot); node == "" {
			return append(es, centry{hasReply: true, reply: []byte(errClusterDown)}), ps
		}
	}
	raw := resp.AppendCommand(nil, "MULTI")
	raw = append(raw, tx.raw...)
	raw = resp.AppendCommand(raw, "EXEC")
	return append(es, centry{op: opOne, first: len(ps), n: 1}),
		append(ps, cpart{node: node, raw: raw, extra: tx.n + 1, use: tx.n + 1, session: tx.session, slot: tx.slot})
}
