package proxy

import (
	"bytes"
	"context"
	"time"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/cluster"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// clusterRewrite turns part p of a session write into the cluster apply script: the write and
// its slot's bookkeeping in one step on the session's node (ClusterOptions.Index). args and
// raw are the client's command; a split part has its own args. By SHA, or by body for a part
// with extra replies (inside MULTI, where a NOSCRIPT could not be retried). A part that writes
// no session key, or that cannot be rewritten, is returned as it is.
func (c *client) clusterRewrite(p cpart, spec *cmdSpec, args [][]byte, raw []byte) cpart {
	a := p.args
	if a == nil {
		if !bytes.Equal(p.raw, raw) { // the proxy's own form of it (an error, a check)
			return p
		}
		a = args
	}
	if !c.mayRewrite() {
		return p
	}
	if c.refs = spec.plan(c.ix.schema, c.refs[:0], a); len(c.refs) == 0 {
		return p
	}
	if len(a) > rewrite.MaxArgs || !c.acl.shared {
		c.s.unindexedWrite(spec, len(a), c.ident)
		return p
	}
	slot := cluster.Slot(c.refs[0].Key)
	for _, r := range c.refs {
		// Redis Cluster refuses a write to another DB, and keys of several slots in one
		// command: Redis answers it with its own error.
		if r.DB != rewrite.CurrentDB || cluster.Slot(r.Key) != slot {
			return p
		}
	}
	c.s.m.rewrites.WithLabelValues("apply").Inc()
	p.raw = c.ix.schema.AppendClusterApply(nil, &c.ix.scripts.Cluster.Apply, p.extra > 0, c.refs, cluster.SlotTag(slot), a)
	p.session, p.slot, p.script = true, slot, true
	return p
}

// retryClusterNoScript handles a node whose script cache was emptied (SCRIPT FLUSH), or that
// joined with none: a session write that met NOSCRIPT did nothing, so it runs again after the
// scripts are loaded there.
func (c *client) retryClusterNoScript(p cpart, reply []byte) []byte {
	if !bytes.HasPrefix(reply, noScript) {
		return reply
	}
	c.s.m.noScriptRetries.Inc()
	node := p.node
	if m := c.s.cluster.m.Load(); m != nil {
		node = m.Node(p.slot)
	}
	req := &request{done: newDone(), cmds: append(append([]redcon.Command(nil), c.ix.loadCmds...), redcon.Command{Raw: p.raw})}
	if err := c.doNode(node, req); err != nil || req.err != nil {
		return reply
	}
	req.fillLost()
	k := len(req.cmds) - 1
	return append([]byte(nil), req.reply[req.replyStart(k):req.ends[k]]...)
}

// clusterSessions answers SESSIONS.LIST/COUNT/REVOKE on a cluster (ClusterIndex.Sessions).
func (c *client) clusterSessions(spec *cmdSpec, args [][]byte) []byte {
	r, errReply := c.ix.sessionsRule(args)
	if errReply != nil {
		return errReply
	}
	if errReply := c.ownUserOnly(); errReply != nil {
		return errReply // the index keeper runs as the proxy's own user, not as the client's
	}
	c.s.m.rewrites.WithLabelValues("sessions").Inc()
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.opts.ReadTimeout)
	defer cancel()
	mode := sessionsMode(spec.name)
	ids, n, err := c.s.cluster.opts.Index.Sessions(ctx, mode, r, string(args[1]))
	if err != nil {
		c.s.m.errors.WithLabelValues(errKindUpstream).Inc()
		return redcon.AppendError(nil, "ERR "+sanitizeLine(unavailable(err).Error()))
	}
	if mode != "list" {
		return redcon.AppendInt(nil, n)
	}
	out := redcon.AppendArray(nil, len(ids))
	for _, id := range ids {
		out = redcon.AppendBulkString(out, id)
	}
	return out
}

// clusterRewriteDedicated is Server.rewrite on a client's own connection in cluster mode (after
// WATCH, a blocking command, SUBSCRIBE): a session write becomes the cluster apply script, by
// body. Its outbox is marked for applying when it is sent and again a moment later, since the
// reply is relayed without the proxy looking at it; what is still left is applied by the pass
// of the node's lease holder (reaper.interval). SESSIONS.* are refused there: they answer from
// several nodes, not from this connection's.
func (s *Server) clusterRewriteDedicated(dst []byte, spec *cmdSpec, args [][]byte, c *client) ([]byte, []byte) {
	if spec.sessions {
		return dst, redcon.AppendError(nil, "ERR SESSIONS commands are not available on a connection of its own "+
			"(after WATCH, SUBSCRIBE or a blocking command) in cluster mode")
	}
	p := c.clusterRewrite(cpart{args: args, extra: 1}, spec, args, nil)
	if !p.session {
		return dst, nil
	}
	index := s.cluster.opts.Index
	index.Dirty(p.slot)
	time.AfterFunc(dedicatedDirtyAgain, func() { index.Dirty(p.slot) })
	return append(dst, p.raw...), nil
}

// dedicatedDirtyAgain: when a session write sent on a client's own connection is looked for in
// its outbox a second time.
const dedicatedDirtyAgain = 100 * time.Millisecond
