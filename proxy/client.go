package proxy

import (
	"net"
	"sync/atomic"

	"github.com/tidwall/redcon"
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

	ded atomic.Pointer[dedicated] // set once the client moved to its own upstream connection
}

func newClient(s *Server, rc redcon.Conn, id uint64) *client {
	return &client{s: s, rc: rc, nc: rc.NetConn(), id: id, ident: s.defaultID,
		req: request{done: make(chan struct{}, 1)}}
}

// run carries out one batch: the commands that arrived together. Consecutive shared-route
// commands go upstream in one write; a local command is answered in its place in the order; a
// command that needs connection state moves the client, with the rest of the batch, to a
// dedicated upstream connection.
func (c *client) run(cmds []redcon.Command) {
	if d := c.ded.Load(); d != nil {
		d.forward(cmds)
		return
	}
	start := 0 // first command of the pending shared run
	for i := range cmds {
		spec := c.s.table.lookup(cmds[i].Args[0])
		c.s.m.commands[spec.idx].Inc()
		switch spec.routeOf(cmds[i].Args) {
		case routeShared:
			continue
		case routeLocal:
			c.sendShared(cmds[start:i])
			if c.closing {
				return
			}
			spec.local(c, cmds[i].Args)
			start = i + 1
		case routeDedicated:
			c.sendShared(cmds[start:i])
			if !c.closing {
				c.toDedicated(cmds[i:])
			}
			return
		}
		if c.closing {
			return
		}
	}
	c.sendShared(cmds[start:])
}

// sendShared runs cmds over the client's shared upstream connection and writes their replies.
func (c *client) sendShared(cmds []redcon.Command) {
	if len(cmds) == 0 {
		return
	}
	req := &c.req
	req.cmds = cmds
	defer func() { req.cmds = nil }()
	for attempt := 0; ; attempt++ {
		u, err := c.sharedConn()
		if err != nil {
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
	c.write(req.reply)
	if cap(req.reply) > 1<<20 {
		req.reply = nil // a huge reply once should not pin its buffer to the client forever
	}
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
	var buf []byte
	buf = appendLostReplies(buf, n, err)
	c.write(buf)
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
