package proxy

import (
	"context"
	"net"
	"time"
)

// watchIdle ends the connections of clients idle for longer than Limits.IdleTimeout, as Redis'
// `timeout` does: checked every second, silently (Redis writes nothing either). A client is
// active while it sends (a command still coming in counts), while a batch of its is handled,
// and while a reply is being written to it; as in Redis, a client waiting for a blocking
// command's reply, a subscriber (and MONITOR, tracking redirection: anything that receives
// unasked frames) and a replication stream are exempt.
func (s *Server) watchIdle(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		timeout := s.lim().IdleTimeout
		if timeout <= 0 {
			continue
		}
		now := time.Now().UnixNano()
		limit := now - int64(timeout)
		var idle []*client
		s.mu.Lock()
		for c := range s.clients {
			if c.conn != nil {
				n, writing := c.conn.Activity()
				if n != c.idleIO || writing {
					c.idleIO, c.idleAt = n, now
				}
			}
			if max(c.info.active.Load(), c.idleAt) >= limit || c.exemptFromIdle() {
				continue
			}
			// Claimed under the check: a batch can no longer start (serveCommand), so the
			// close below cannot cut one that has begun.
			if c.state.CompareAndSwap(stateIdle, stateKilled) {
				idle = append(idle, c)
			}
		}
		s.mu.Unlock()
		for _, c := range idle {
			s.m.disconnected.WithLabelValues(closeIdle).Inc()
			s.log.Debug("closing idle client", "client", c.id, "timeout", timeout)
			closeRaw(c.nc)
		}
	}
}

// A client's state for the idle timeout (client.state): between batches, in one, or ended.
const (
	stateIdle int32 = iota
	stateBatch
	stateKilled
)

// exemptFromIdle reports whether the client's connection of its own is waiting for a reply (a
// blocking command), receives frames unasked, or carries a replication stream.
func (c *client) exemptFromIdle() bool {
	d := c.ded.Load()
	return d != nil && (!d.idle() || d.pushes.Load() || d.raw.Load())
}

// closeRaw closes a client connection at the TCP level: a TLS connection's Close would first
// try to send its closing alert, which can wait seconds for a client that does not read.
func closeRaw(nc net.Conn) {
	if raw, ok := tlsRaw(nc); ok {
		raw.Close()
	}
	nc.Close()
}
