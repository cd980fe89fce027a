package proxy

import (
	"context"
	"time"
)

// watchIdle ends the connections of clients idle for longer than IdleTimeout, as Redis'
// `timeout` does: checked every second, silently (Redis writes nothing either). As in Redis,
// a client waiting for a blocking command's reply, a subscriber (and MONITOR, tracking
// redirection: anything that receives unasked frames) and a replication stream are exempt.
// A client counts as active while a batch of its is being handled.
func (s *Server) watchIdle(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		limit := time.Now().Add(-s.opts.IdleTimeout).UnixNano()
		var idle []*client
		s.mu.Lock()
		for c := range s.clients {
			if c.info.active.Load() < limit && !c.inBatch.Load() && !c.exemptFromIdle() {
				idle = append(idle, c)
			}
		}
		s.mu.Unlock()
		for _, c := range idle {
			s.m.disconnected.WithLabelValues(closeIdle).Inc()
			s.log.Debug("closing idle client", "client", c.id, "timeout", s.opts.IdleTimeout)
			c.nc.Close()
		}
	}
}

// exemptFromIdle reports whether the client's connection of its own is waiting for a reply (a
// blocking command), receives frames unasked, or carries a replication stream.
func (c *client) exemptFromIdle() bool {
	d := c.ded.Load()
	return d != nil && (!d.idle() || d.pushes.Load() || d.raw.Load())
}
