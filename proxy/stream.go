package proxy

import (
	"bytes"
	"runtime"

	"github.com/tidwall/redcon"
)

// Streaming large replies. A request whose commands all pass through as they are (no session
// write, no script call: nothing of their replies is rewritten) may have its replies handed to
// the client while the rest still arrive: once the replies read so far reach streamPart bytes,
// the shared connection's reader hands them over as a part and goes on into a new buffer, and
// the client's goroutine writes the part to the client's socket at once. So 50 pipelined GETs
// of a 10 MiB value start reaching the client after the first one is read, and the proxy holds
// about what the client has not taken yet, once, instead of every reply three times over (the
// request's buffer, the batch's, the writer's) until the last one is in.

// streamPart is the size from which completed replies are handed over. Below it a request's
// replies stay in its reused buffer and go out at the end of the batch, as they always did:
// small replies cost nothing more.
const streamPart = 256 << 10

// replyPart is a run of complete replies handed over: buf, with the end of each in ends.
type replyPart struct {
	buf  []byte
	ends []int
}

// handOver moves the complete replies read so far out of r (reader side, between replies),
// unless the client has stopped taking them (over): then they are dropped.
func (r *request) handOver() {
	r.pmu.Lock()
	r.pending += int64(len(r.reply))
	cut := r.limit > 0 && r.pending > r.limit && !r.over
	if cut {
		r.over = true // past the client's output buffer limit: the rest is dropped
	}
	if r.over {
		r.streamed += len(r.ends)
		r.pmu.Unlock()
		r.reply, r.ends = r.reply[:0], r.ends[:0]
		if cut {
			r.overflow() // its goroutine may be blocked writing to a client that does not read
		}
		return
	}
	r.parts = append(r.parts, replyPart{buf: r.reply, ends: r.ends})
	r.streamed += len(r.ends)
	r.pmu.Unlock()
	r.reply, r.ends = nil, nil
	if len(r.done) == 0 { // one signal at a time: sink takes every part handed over so far
		r.done <- false
	}
	runtime.Gosched() // as in writeParts: other clients first, a part at a time
}

// overflow disconnects a client past its output buffer limit, as Redis does (called by the
// shared connection's reader, once per request).
func (c *client) overflow() {
	c.s.m.disconnected.WithLabelValues(closeOutput).Inc()
	c.s.log.Debug("client over its output buffer limit: closing", "client", c.id, "limit", c.req.limit)
	closeRaw(c.nc) // not a TLS close, which may wait for a client that does not read
}

// takeParts returns the parts handed over since the last call.
func (r *request) takeParts(dst []replyPart) ([]replyPart, bool) {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	dst = append(dst, r.parts...)
	clear(r.parts)
	r.parts = r.parts[:0]
	return dst, r.over
}

// taken reports n bytes of parts written to the client: they no longer count against its limit.
func (r *request) taken(n int) {
	r.pmu.Lock()
	r.pending -= int64(n)
	r.pmu.Unlock()
}

// mayStream reports whether the run's replies in c.spans can go to the client as they come:
// none of them is rewritten, and none is waiting in c.acc ahead of them.
func (c *client) mayStream() bool {
	if len(c.accEnds) > 0 {
		return false
	}
	for _, sp := range c.spans {
		if sp.script || sp.merged || sp.busy || sp.info {
			return false
		}
	}
	return true
}

// writeParts writes the parts the reader has handed over to the client, after everything the
// batch buffered before them. A client that went over its output buffer limit is closed
// instead (as Redis closes it), and its replies are dropped.
func (c *client) writeParts() {
	var over bool
	c.parts, over = c.req.takeParts(c.parts[:0])
	if over {
		c.closing = true // overflow closed the connection
	}
	for i, p := range c.parts {
		if !c.closing && redcon.BaseWriter(c.rc).Flush() != nil {
			c.closing = true // the replies before the part first (an empty flush writes nothing)
		}
		if !c.closing {
			start := 0
			for _, e := range p.ends {
				if reply := p.buf[start:e]; reply[0] == '-' && bytes.HasPrefix(reply, readonlyPrefix) {
					c.s.upstreamReadonly()
				}
				start = e
			}
			if _, err := c.nc.Write(p.buf); err != nil {
				c.closing = true
			}
			c.written += len(p.buf)
			// Let other clients' goroutines run between parts: the reader and this writer of
			// a large stream each keep a P busy (the client and Redis keep up), and on a small
			// host a PING would wait a whole time slice (10 ms) per hop behind them (PING p99
			// 36 ms while 4 GB streamed, 8-10 ms with the yields; bench/bounds "pipeline").
			runtime.Gosched()
		}
		c.req.taken(len(p.buf))
		c.parts[i] = replyPart{}
	}
}
