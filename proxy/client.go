package proxy

import (
	"bytes"
	"net"
	"sync/atomic"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/rewrite"
)

// client is the proxy's state for one client connection. Everything but ded is owned by the
// connection's redcon goroutine.
type client struct {
	s     *Server
	rc    redcon.Conn
	nc    net.Conn // the normalizing wrapper; the dedicated relay writes replies here
	id    uint64
	ident identity
	db    int
	name  string
	pool  *pool // cached pool for (ident, db); nil after either changes

	req     request
	batch   []redcon.Command
	closing bool

	// Rewrites of the current batch: the new command bytes live in arena (which may move while
	// it grows), so Raw is pointed at them only right before sending.
	arena    []byte
	rewrites []rewritten
	refs     []rewrite.Ref

	ded atomic.Pointer[dedicated] // set once the client moved to its own upstream connection
}

// rewritten is one command of the batch replaced by a script call.
type rewritten struct {
	idx        int // in the batch
	start, end int // in arena
}

func newClient(s *Server, rc redcon.Conn, id uint64) *client {
	return &client{s: s, rc: rc, nc: rc.NetConn(), id: id, ident: s.defaultID,
		req: request{done: make(chan struct{}, 1)}}
}

// run carries out one batch: the commands that arrived together. Consecutive shared-route
// commands go upstream in one write (session writes among them rewritten into script calls); a
// local command is answered in its place in the order; a command that needs connection state
// moves the client, with the rest of the batch, to a dedicated upstream connection.
func (c *client) run(cmds []redcon.Command) {
	if d := c.ded.Load(); d != nil {
		d.forward(cmds)
		return
	}
	c.arena, c.rewrites = c.arena[:0], c.rewrites[:0]
	start := 0 // first command of the pending shared run
	for i := range cmds {
		args := cmds[i].Args
		spec := c.s.table.lookup(args[0])
		c.s.m.commands[spec.idx].Inc()
		r := spec.routeOf(args)
		if r == routeShared && (spec.plan != nil || spec.sessions) {
			var errReply []byte
			if c.arena, errReply = c.s.rewrite(c.arena, spec, args, false, false, &c.refs); errReply != nil {
				c.sendShared(cmds[start:i], start)
				if c.closing {
					return
				}
				c.write(errReply)
				start = i + 1
				continue
			}
			if end := len(c.arena); c.rewriteEnd() != end {
				c.rewrites = append(c.rewrites, rewritten{idx: i, start: c.rewriteEnd(), end: end})
			}
		}
		switch r {
		case routeShared:
			continue
		case routeLocal:
			c.sendShared(cmds[start:i], start)
			if c.closing {
				return
			}
			spec.local(c, args)
			start = i + 1
		case routeDedicated:
			c.sendShared(cmds[start:i], start)
			if !c.closing {
				c.toDedicated(cmds[i:])
			}
			return
		}
		if c.closing {
			return
		}
	}
	c.sendShared(cmds[start:], start)
}

// rewriteEnd is where the next rewrite starts in the arena.
func (c *client) rewriteEnd() int {
	if n := len(c.rewrites); n > 0 {
		return c.rewrites[n-1].end
	}
	return 0
}

// rewrite appends the script call replacing a session write or SESSIONS command to dst; dst
// comes back unchanged if the command touches no session key. An error reply means the
// command is answered by the proxy instead.
func (s *Server) rewrite(dst []byte, spec *cmdSpec, args [][]byte, byBody, resp3 bool, refs *[]rewrite.Ref) ([]byte, []byte) {
	if spec.sessions {
		out, errReply, _ := s.appendSessionsCall(dst, spec, args, byBody)
		if errReply == nil {
			s.m.rewrites.WithLabelValues("sessions").Inc()
		}
		return out, errReply
	}
	*refs = spec.plan((*refs)[:0], args)
	if len(*refs) == 0 {
		return dst, nil
	}
	if len(args) > rewrite.MaxArgs {
		s.m.unindexed.Inc()
		s.log.Warn("session write too long to rewrite; left to repair", "cmd", spec.name, "args", len(args))
		return dst, nil
	}
	s.m.rewrites.WithLabelValues("apply").Inc()
	return s.schema.AppendApply(dst, &s.scripts.Apply, byBody, resp3, *refs, args), nil
}

// sendShared runs cmds (batch positions base...) over the client's shared upstream connection
// and writes their replies.
func (c *client) sendShared(cmds []redcon.Command, base int) {
	if len(cmds) == 0 {
		return
	}
	rws := c.pointRewrites(cmds, base)
	req := &c.req
	req.cmds = cmds
	defer func() { req.cmds = nil }()
	var u *sharedConn
	for attempt := 0; ; attempt++ {
		var err error
		if u, err = c.sharedConn(); err != nil {
			c.fail(len(cmds), err)
			return
		}
		if err := u.do(req); err == errNotSent && attempt == 0 {
			continue // the connection died while idle; nothing was sent, so dial again
		} else if err != nil {
			c.fail(len(cmds), ErrUpstreamLost)
			return
		}
		break
	}
	if len(rws) > 0 {
		c.retryNoScript(u, cmds, base, rws)
	}
	c.write(req.reply)
	if cap(req.reply) > 1<<20 {
		req.reply = nil // a huge reply once should not pin its buffer to the client forever
	}
}

// pointRewrites points the rewritten commands among cmds at their script calls and returns them.
func (c *client) pointRewrites(cmds []redcon.Command, base int) []rewritten {
	lo := 0
	for lo < len(c.rewrites) && c.rewrites[lo].idx < base {
		lo++
	}
	hi := lo
	for hi < len(c.rewrites) && c.rewrites[hi].idx < base+len(cmds) {
		rw := c.rewrites[hi]
		cmds[rw.idx-base].Raw = c.arena[rw.start:rw.end]
		hi++
	}
	return c.rewrites[lo:hi]
}

var noScript = []byte("-NOSCRIPT")

// retryNoScript handles a script cache emptied behind the proxy's back (SCRIPT FLUSH): the
// failed script calls did nothing, so they are run again, in order, after reloading the scripts.
// Commands of the same batch that followed them have already run; that reordering is the one
// visible effect, and only right after a flush.
func (c *client) retryNoScript(u *sharedConn, cmds []redcon.Command, base int, rws []rewritten) {
	req := &c.req
	var failed []redcon.Command
	var at []int // batch-relative positions of the failed calls
	for _, rw := range rws {
		i := rw.idx - base
		if bytes.HasPrefix(req.reply[req.replyStart(i):req.ends[i]], noScript) {
			failed = append(failed, cmds[i])
			at = append(at, i)
		}
	}
	if len(failed) == 0 {
		return
	}
	c.s.m.noScriptRetries.Inc()
	load := &request{done: make(chan struct{}, 1), cmds: c.s.loadScriptCmds}
	retry := &request{done: make(chan struct{}, 1), cmds: failed}
	if u.do(load) != nil || u.do(retry) != nil {
		return // the connection died; the NOSCRIPT errors stand
	}
	// Splice the retried replies into their places.
	var out []byte
	k := 0
	for i := range cmds {
		if k < len(at) && at[k] == i {
			out = append(out, retry.reply[retry.replyStart(k):retry.ends[k]]...)
			k++
			continue
		}
		out = append(out, req.reply[req.replyStart(i):req.ends[i]]...)
	}
	req.reply = out
}

func (c *client) sharedConn() (*sharedConn, error) {
	if c.pool == nil {
		p, err := c.s.pools.get(poolKey{c.ident, c.db})
		if err != nil {
			return nil, err
		}
		c.pool = p
	}
	return c.pool.conn(c.s.ctx, c.id)
}

// write queues reply bytes for the client; redcon flushes them once per batch.
func (c *client) write(b []byte) {
	c.rc.WriteRaw(b)
	c.s.m.bytesOut.Add(float64(len(b)))
}

// fail answers n commands with an upstream error and closes the client after them: its
// upstream cannot be reached, and a clear error beats a hanging connection.
func (c *client) fail(n int, err error) {
	c.s.m.errors.WithLabelValues(errKindUpstream).Inc()
	c.s.log.Debug("upstream failure", "client", c.id, "err", err)
	c.write(appendLostReplies(nil, n, err))
	c.close()
}

// close flushes what was written and closes the connection after the current batch.
func (c *client) close() {
	c.closing = true
	c.rc.Close()
}

// setIdentity switches the ACL user the client's commands run as.
func (c *client) setIdentity(id identity) {
	c.ident, c.pool = id, nil
}

// release frees what the client holds upstream; called once the connection has closed.
func (c *client) release() {
	if d := c.ded.Load(); d != nil {
		d.close()
	}
}
