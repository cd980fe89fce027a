package proxy

import (
	"bufio"
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// dedicated is a client's own upstream connection, used once the client needs connection state
// the proxy cannot share (MULTI, WATCH, subscriptions, blocking commands, MONITOR,
// client tracking...). Commands go up as they arrive, one write per client batch; a relay
// goroutine copies replies, pushes and messages back raw as they come. The client keeps it
// until it disconnects.
type dedicated struct {
	c  *client
	nc net.Conn
	br *bufio.Reader
	m  *metrics

	out []byte // owned by the client goroutine

	sent    atomic.Int64 // replies expected for what was forwarded
	relayed atomic.Int64 // frames relayed (replies, and pushes/messages once subscribed)
	// unpaired is set once the number of replies to expect is unknown (CLIENT REPLY, an
	// UNSUBSCRIBE of everything, replication): the proxy cannot tell what is outstanding.
	unpaired atomic.Bool
	// pushes is set once frames may arrive unasked (subscriptions, MONITOR, tracking): relayed
	// then also counts those, so it no longer tells how many replies are missing.
	pushes atomic.Bool
	// raw: SYNC or PSYNC was forwarded. What follows is a replication stream (an RDB payload
	// without a trailing CRLF, newlines while Redis prepares it, then the command stream): the
	// relay copies bytes from then on instead of framing replies.
	raw atomic.Bool
	// quit: QUIT was forwarded. Redis answers nothing after it, and the connection it then
	// closes did not fail (read by the relay too).
	quit atomic.Bool
	// The connection's DB as far as the proxy can tell (for SESSIONS.CHECK/REINDEX): SELECT
	// applies at once, or at EXEC inside MULTI; a SELECT Redis refuses is not noticed.
	db, multiDB    int
	inMulti, hasDB bool
	closed         atomic.Bool

	// infoMu guards infoAt: the 0-based numbers of the replies that answer an INFO of the
	// default sections, oldest first, which the relay gives the proxy's own section as the
	// shared path does (only while every reply is paired with a command: no pushes, not
	// inside MULTI, where the reply is EXEC's).
	infoMu sync.Mutex
	infoAt []int64
	infoN  atomic.Int64 // len(infoAt): the relay takes the lock only when it is not 0
}

// toDedicated moves the client to a dedicated upstream connection and forwards cmds there.
func (c *client) toDedicated(cmds []redcon.Command) {
	// A connection of its own counts against Redis' maxclients: beyond limits.max_dedicated the
	// client is answered with an error instead, and stays (the admin's and the proxy's own
	// connections must still get in).
	if !c.mayRewrite() {
		// An unauthenticated client of a Redis that requires a password: Redis answers its
		// commands -NOAUTH, so none is worth a connection (which would count against the
		// bound, and Redis' maxclients, for nothing).
		for range cmds {
			c.write([]byte(errNoAuth))
		}
		return
	}
	if n, limit := c.s.ndedicated.Add(1), c.s.lim().MaxDedicated; limit > 0 && n > int64(limit) {
		c.s.ndedicated.Add(-1)
		c.s.m.dedicatedRefused.Inc()
		for range cmds {
			c.write([]byte(errMaxDedicated))
		}
		return
	}
	started := false
	defer func() {
		if !started {
			c.s.ndedicated.Add(-1)
		}
	}()
	var nc net.Conn
	var br *bufio.Reader
	gen := c.s.dialer.gen.Load()
	if p, err := c.s.pools.get(c.key()); err == nil {
		nc, br = p.takeSpare()
	}
	if nc != nil && c.name != "" {
		// A spare has no name yet. Set it before the client's commands, and wait for the
		// reply: SYNC refuses to start while a reply is pending. Refused (a busy script), the
		// connection stays unnamed.
		var re *replyError
		if _, err := c.s.dialer.roundTrip(nc, br, resp.AppendCommand(nil, "CLIENT", "SETNAME", c.name), 1); err != nil && !errors.As(err, &re) {
			nc.Close()
			nc, br = nil, nil
		}
	}
	if nc == nil {
		c.s.m.upstreamDials.Inc()
		var err error
		if nc, br, err = c.s.dialer.dial(c.s.ctx, c.key(), c.name, false); err != nil {
			c.s.m.upstreamDialErrors.Inc()
			c.fail(len(cmds), err)
			return
		}
	}
	if c.s.dialer.gen.Load() != gen { // the upstream changed during the dial (a failover)
		nc.Close()
		c.s.m.upstreamDialErrors.Inc()
		c.fail(len(cmds), errUpstreamChanged)
		return
	}
	// Replies already written in this batch must reach the client before the relay writes.
	if err := redcon.BaseWriter(c.rc).Flush(); err != nil {
		nc.Close()
		c.close()
		return
	}
	d := &dedicated{c: c, nc: nc, br: br, m: c.s.m, db: c.db}
	if rc, ok := c.nc.(*resp.Conn); ok {
		rc.BeforeErrorReply = d.quiesce // a protocol error must follow the replies before it
		// In a graceful shutdown the client's connection may be closed right after a batch was
		// forwarded: let its replies through first (bounded), then close.
		rc.SetBeforeClose(func() {
			if c.s.draining.Load() && !c.s.forcing.Load() {
				d.quiesce()
			}
		})
	}
	c.ded.Store(d)
	if c.s.dialer.gen.Load() != gen {
		nc.Close() // SetUpstream ran since the check above and may have missed d
	}
	c.s.m.dedicated.Inc()
	started = true // the relay gives the count back when the connection ends
	go d.relay()
	d.forwardCounted(cmds, true)
}

// errMaxDedicated answers a command that needs a connection of its own beyond max_dedicated.
const errMaxDedicated = "-ERR max number of clients on their own upstream connections reached (limits.max_dedicated)\r\n"

// forward sends a batch of a client that is already dedicated.
func (d *dedicated) forward(cmds []redcon.Command) { d.forwardCounted(cmds, false) }

// forwardCounted sends cmds upstream in one write. counted says the first command was already
// counted in the metrics by the caller.
func (d *dedicated) forwardCounted(cmds []redcon.Command, counted bool) {
	if d.quit.Load() {
		return // Redis closes after QUIT; the relay then closes the client
	}
	s := d.c.s
	expect := int64(0)
	for i := range cmds {
		args := cmds[i].Args
		spec := s.table.lookup(args[0])
		if !(counted && i == 0) {
			d.m.commands[spec.idx].Inc()
		}
		if spec.drainFirst {
			d.sent.Add(expect)
			expect = 0
			if !d.write() {
				return
			}
			d.quiesce()
		}
		if fullInfo(args) && !d.inMulti && !d.pushes.Load() && !d.unpaired.Load() {
			d.infoMu.Lock()
			d.infoAt = append(d.infoAt, d.sent.Load()+expect)
			d.infoN.Store(int64(len(d.infoAt)))
			d.infoMu.Unlock()
		}
		d.appendCommand(spec, cmds[i])
		expect++
		if spec.track != nil {
			expect += spec.track(d, args)
		}
		if d.quit.Load() {
			break
		}
		if !d.c.authed { // a RESET logged the client out: the rest waits for its AUTH
			d.sent.Add(expect)
			if d.write() {
				d.c.run(cmds[i+1:])
			}
			return
		}
	}
	d.sent.Add(expect)
	d.write()
	d.c.handedOff()
	if cap(d.out) > 1<<20 {
		d.out = nil
	}
}

// write sends what is buffered; on failure the relay sees the closed connection, answers what
// is outstanding and closes the client.
func (d *dedicated) write() bool {
	if len(d.out) == 0 {
		return true
	}
	if t := d.c.s.lim().CommandTimeout; t > 0 {
		_ = d.nc.SetWriteDeadline(time.Now().Add(t)) // a stalled Redis must not hold the client
	}
	_, err := d.nc.Write(d.out)
	d.out = d.out[:0]
	if err != nil {
		d.nc.Close()
		return false
	}
	return true
}

// appendCommand appends cmd, or the script call replacing it, to the outgoing buffer. Script
// calls go by body (EVAL): inside MULTI a NOSCRIPT could not be retried. The proxy's own
// answers (SESSIONS.REINDEX, CHECK, HELP, errors) go up as an EVAL returning them, which keeps
// them in order with the upstream replies relayed as they come.
func (d *dedicated) appendCommand(spec *cmdSpec, cmd redcon.Command) {
	s := d.c.s
	switch {
	case spec.sendDedicated != nil && spec.sendDedicated(d, cmd):
	case spec.sessions && spec.routeOf(cmd.Args) == routeLocal:
		d.out = appendEchoError(d.out, errArity(cmd.Args[0]))
	case spec.plan != nil || spec.sessions:
		out, errReply := s.rewrite(d.out, spec, cmd.Args, d.c)
		switch {
		case errReply != nil:
			d.out = appendEchoError(d.out, errReply)
		case len(out) == len(d.out):
			d.out = append(d.out, cmd.Raw...) // not a session write
		default:
			d.out = out
		}
	default:
		d.out = append(d.out, cmd.Raw...)
	}
}

// sendSessionsHelp answers SESSIONS.HELP in order with the replies before it.
func (d *dedicated) sendSessionsHelp(redcon.Command) bool {
	d.out = appendEcho(d.out, echoStatus, sessionsHelp...)
	return true
}

// sendRepair runs SESSIONS.REINDEX/CHECK (drainFirst: after everything before it has run) and
// sends its report as an echo.
func (d *dedicated) sendRepair(cmd redcon.Command) bool {
	if errReply := d.c.ownUserOnly(); errReply != nil {
		d.out = appendEchoError(d.out, errReply)
		return true
	}
	rep, errReply := d.c.s.runRepair(d.db, cmd.Args)
	if errReply != nil {
		d.out = appendEchoError(d.out, errReply)
	} else {
		d.out = appendEchoReport(d.out, rep)
	}
	return true
}

// sendClient answers the CLIENT subcommands about the proxy's own clients (cmd_client.go).
func (d *dedicated) sendClient(cmd redcon.Command) bool {
	if !proxyClientCmd(cmd.Args) {
		return false
	}
	d.appendClientCmd(cmd)
	return true
}

// Trackers of the connection state commands change (cmdSpec.track).

func (d *dedicated) trackQuit([][]byte) int64 {
	d.quit.Store(true)
	return 0
}

func (d *dedicated) trackSelect(args [][]byte) int64 {
	if n, ok := resp.ParseInt(args[len(args)-1]); ok && len(args) == 2 && n >= 0 && n <= math.MaxInt32 {
		if d.inMulti {
			d.multiDB, d.hasDB = int(n), true
		} else {
			d.db = int(n)
		}
	}
	return 0
}

func (d *dedicated) trackMulti([][]byte) int64 {
	d.inMulti, d.hasDB = true, false
	return 0
}

func (d *dedicated) trackExec([][]byte) int64 {
	if d.inMulti && d.hasDB {
		d.db = d.multiDB
	}
	return d.trackDiscard(nil)
}

func (d *dedicated) trackDiscard([][]byte) int64 {
	d.inMulti, d.hasDB = false, false
	return 0
}

// trackSubscribe: one confirmation per channel, and messages from then on.
func (d *dedicated) trackSubscribe(args [][]byte) int64 {
	d.pushes.Store(true)
	return int64(max(len(args)-2, 0))
}

// trackUnsubscribe: one reply per channel named; without channels, one per channel subscribed
// (or one if none), which the proxy cannot count.
func (d *dedicated) trackUnsubscribe(args [][]byte) int64 {
	if len(args) == 1 {
		d.unpaired.Store(true)
	}
	return int64(max(len(args)-2, 0))
}

func (d *dedicated) trackPushes([][]byte) int64 {
	d.pushes.Store(true)
	return 0
}

// trackReplication: after SYNC/PSYNC the connection is a replication stream; set before the
// write, since the relay checks it before each frame.
func (d *dedicated) trackReplication([][]byte) int64 {
	d.unpaired.Store(true)
	d.raw.Store(true)
	return 0
}

func (d *dedicated) trackClient(args [][]byte) int64 {
	switch {
	case len(args) > 1 && equalFold(args[1], "REPLY"):
		d.unpaired.Store(true)
	case len(args) > 1 && equalFold(args[1], "TRACKING"):
		d.pushes.Store(true)
	}
	return 0
}

// trackReset: RESET logs the upstream connection out to Redis' default user, and the client
// with it: as on the shared path (cmdReset), it is not authenticated any more, and with
// ClientPassword it must AUTH again (authGate) before anything more reaches this connection.
func (d *dedicated) trackReset(args [][]byte) int64 {
	d.db, d.inMulti, d.hasDB = 0, false, false
	if len(args) == 1 {
		d.c.setIdentity(d.c.s.anonID, aclAllowed)
		d.c.authed = d.c.s.clientPassword() == ""
	}
	return 0
}

// loginAsProxy logs this connection in as the proxy's user, for a client that gave
// ClientPassword while on it: Redis' +OK answers the client's AUTH, in order.
func (d *dedicated) loginAsProxy() {
	id := d.c.s.defaultID
	d.out = resp.AppendCommand(d.out, "AUTH", id.user, id.pass)
	d.sent.Add(1)
	d.write()
}

// relay copies replies from upstream to the client, coalescing whatever is already buffered
// into one client write.
func (d *dedicated) relay() {
	defer d.m.dedicated.Dec()
	defer d.c.s.ndedicated.Add(-1)
	buf := make([]byte, 0, 16<<10)
	for {
		buf = buf[:0]
		var err error
		n := int64(0)
		for {
			// Wait for the next frame's first byte before reading raw: a SYNC forwarded
			// meanwhile turns everything from here on into a byte stream.
			if _, err = d.br.Peek(1); err != nil || d.raw.Load() {
				break
			}
			mark := len(buf)
			if buf, err = resp.AppendReply(buf, d.br); err != nil {
				buf = buf[:mark]
				break
			}
			if d.isInfoReply(d.relayed.Load() + n) {
				buf = append(buf[:mark], d.c.s.withProxySection(buf[mark:])...)
			}
			n++
			if d.br.Buffered() == 0 || len(buf) >= 64<<10 {
				break
			}
		}
		if len(buf) > 0 {
			if _, werr := d.c.nc.Write(buf); werr != nil {
				d.close()
				return
			}
			d.m.bytesOut.Add(float64(len(buf)))
		}
		d.relayed.Add(n)
		if err == nil && d.raw.Load() {
			err = d.pipe(buf[:cap(buf)])
		}
		if err != nil {
			d.upstreamGone()
			return
		}
	}
}

// isInfoReply reports whether reply number seq answers an INFO that gets the proxy's section,
// and forgets the numbers before it.
func (d *dedicated) isInfoReply(seq int64) bool {
	if d.infoN.Load() == 0 {
		return false
	}
	d.infoMu.Lock()
	defer d.infoMu.Unlock()
	defer func() { d.infoN.Store(int64(len(d.infoAt))) }()
	for len(d.infoAt) > 0 && d.infoAt[0] < seq {
		d.infoAt = d.infoAt[1:]
	}
	if len(d.infoAt) > 0 && d.infoAt[0] == seq {
		d.infoAt = d.infoAt[1:]
		return true
	}
	return false
}

// pipe copies the upstream's bytes to the client as they come (a replication stream) until
// either side fails; a client that went away closes the upstream too.
func (d *dedicated) pipe(buf []byte) error {
	for {
		n, err := d.br.Read(buf)
		if n > 0 {
			if _, werr := d.c.nc.Write(buf[:n]); werr != nil {
				d.close()
				return werr
			}
			d.m.bytesOut.Add(float64(n))
		}
		if err != nil {
			return err
		}
	}
}

// upstreamGone answers the commands still waiting (when that count is known) and closes the client.
func (d *dedicated) upstreamGone() {
	if !d.closed.Load() { // Redis (or the network) ended it, not the proxy
		if !d.quit.Load() { // after QUIT that is the normal end
			d.m.errors.WithLabelValues(errKindUpstream).Inc()
		}
		if !d.unpaired.Load() && !d.pushes.Load() {
			if n := d.sent.Load() - d.relayed.Load(); n > 0 {
				lost := appendLostReplies(nil, int(n), ErrUpstreamLost)
				if _, err := d.c.nc.Write(lost); err == nil {
					d.m.bytesOut.Add(float64(len(lost)))
				}
			}
		}
	}
	d.close()
	d.c.nc.Close()
}

// idle reports whether every forwarded command has been answered (false when unknowable).
func (d *dedicated) idle() bool {
	return !d.unpaired.Load() && d.relayed.Load() >= d.sent.Load()
}

// quiesce waits, boundedly, until the replies to everything forwarded have been relayed.
func (d *dedicated) quiesce() {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if d.closed.Load() || d.idle() {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (d *dedicated) close() {
	if d.closed.CompareAndSwap(false, true) {
		d.nc.Close()
	}
}
