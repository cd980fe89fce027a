package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

var (
	// ErrUpstreamLost is the reply for commands whose upstream connection failed before they were answered.
	ErrUpstreamLost = errors.New("upstream connection lost")
	// errUpstreamChanged: a connection was dialed to an upstream the proxy has since left.
	errUpstreamChanged = errors.New("upstream unavailable: the master changed (failover)")
	// ErrUpstreamDesync means the upstream sent a reply nobody asked for.
	ErrUpstreamDesync = errors.New("upstream sent an unexpected reply")
)

// identity is the Redis ACL user a client's commands run as. auth says a connection must log
// in as it: set for every user a client logged in as (an empty password is a password: `AUTH u1
// ""` logs in a nopass user), and for the proxy's configured user when one is configured.
type identity struct {
	user, pass string
	auth       bool
}

// creds reports whether the identity must AUTH on a new connection.
func (id identity) creds() bool { return id.auth }

// dialer opens upstream connections and brings them to a (identity, db) state.
type dialer struct {
	// addr is where new connections go; gen counts its changes (SetUpstream), so that a
	// connection dialed before a change is known as one to the old address.
	addr        atomic.Pointer[string]
	gen         atomic.Uint64
	base        identity // the proxy's own user: a new connection's SELECT runs as it
	tls         *tls.Config
	dialTimeout time.Duration
	readTimeout time.Duration
	// setup runs on every new shared connection: it loads the scripts that connection runs by
	// SHA (those of the index rules in force). Its error replies (e.g. an ACL without SCRIPT)
	// are not fatal: script calls then answer NOSCRIPT, which the proxy retries once.
	setup atomic.Pointer[indexSet]

	// log and down: an outage is logged when a dial first fails to reach Redis, and the
	// recovery when one succeeds again, once each (noteDial).
	log  *slog.Logger
	down atomic.Bool
}

// noteDial logs the upstream becoming unreachable (a dial that could not connect or set up
// the connection) and reachable again, once per change. A dial Redis answered with an error
// (-LOADING, -BUSY, -NOAUTH) reached it.
func (d *dialer) noteDial(addr string, err error) {
	var re *replyError
	switch {
	case err == nil || errors.As(err, &re):
		if d.down.CompareAndSwap(true, false) {
			d.log.Info("upstream reachable again", "addr", addr)
		}
	case errors.Is(err, context.Canceled):
	default:
		if d.down.CompareAndSwap(false, true) {
			d.log.Warn("upstream unreachable: clients get errors until it is back", "addr", addr, "err", err)
		}
	}
}

// unavailable is the error for a connection to Redis that could not be made or used. Clients
// see its text: it says why (refused, timed out, reset) without the addresses (README).
func unavailable(err error) error { return fmt.Errorf("upstream unavailable: %w", hideAddrs(err)) }

// addrFree is an error whose text leaves out the addresses of the net.OpError it wraps.
type addrFree struct{ err error }

func (e addrFree) Error() string {
	var op *net.OpError
	if errors.As(e.err, &op) && op.Err != nil {
		return op.Op + ": " + op.Err.Error() // e.g. "dial: connect: connection refused"
	}
	return e.err.Error()
}

func (e addrFree) Unwrap() error { return e.err }

// hideAddrs wraps err so that its text names no address.
func hideAddrs(err error) error { return addrFree{err} }

// dial connects and runs the setup commands for id and db, checking each reply. An error reply
// from Redis during setup comes back as *replyError so callers can relay it byte for byte.
func (d *dialer) dial(ctx context.Context, key poolKey, name string, shared bool) (net.Conn, *bufio.Reader, error) {
	addr := key.node
	if addr == "" {
		addr = *d.addr.Load()
	}
	nc, br, err := d.dialAddr(ctx, addr, key, name, shared)
	d.noteDial(addr, err)
	return nc, br, err
}

// dialAddr is dial to addr.
func (d *dialer) dialAddr(ctx context.Context, addr string, key poolKey, name string, shared bool) (net.Conn, *bufio.Reader, error) {
	id, db := key.id, key.db
	nd := net.Dialer{Timeout: d.dialTimeout, KeepAlive: 15 * time.Second}
	nc, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, unavailable(err)
	}
	if d.tls != nil {
		tc := tls.Client(nc, d.tls)
		hctx, cancel := context.WithTimeout(ctx, d.dialTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, nil, fmt.Errorf("upstream unavailable: tls: %w", hideAddrs(err))
		}
		nc = tc
	}
	br := bufio.NewReaderSize(nc, 32<<10)
	var setup []byte
	n := 0
	add := func(args ...string) {
		setup = resp.AppendCommand(setup, args...)
		n++
	}
	// A client may have chosen its DB before it logged in as a user that may not run SELECT
	// (Redis keeps the DB across AUTH): such a connection selects its DB as the connection's
	// user before the client's logs in — the proxy's own, or the default user. Where that is
	// refused (no default user without a password), the client's user selects it.
	// cmdSelect has Redis judge a client's own SELECT as its user.
	selectFirst, selectAt := db != 0 && id.creds() && id != d.base, -1
	if selectFirst {
		if d.base.creds() {
			add("AUTH", d.base.user, d.base.pass)
		}
		selectAt = n
		add("SELECT", strconv.Itoa(db))
	}
	if id.creds() {
		add("AUTH", id.user, id.pass)
	}
	if db != 0 && !selectFirst {
		add("SELECT", strconv.Itoa(db))
	}
	if key.resp3 {
		add("HELLO", "3")
	}
	nameAt := -1
	if name != "" {
		nameAt = n // a busy script refuses it: the connection then stays unnamed
		add("CLIENT", "SETNAME", name)
	}
	if n == 0 && !shared {
		// A connection is ready once Redis has accepted it: a command written before that is
		// read an event-loop turn late, after commands other connections wrote after it. RESET
		// changes nothing on a fresh connection that needs no setup (default user, DB 0,
		// RESP2, no name), and Redis serves it before authentication, to every ACL user and
		// while a script is busy. (Shared connections have their SCRIPT LOAD exchange.)
		add("RESET")
	}
	reselect, i := false, 0
	if n > 0 {
		err = d.exchange(nc, br, setup, n, func(reply []byte) error {
			i++
			switch {
			case reply[0] != '-':
			case i-1 == selectAt:
				reselect = true
			case i-1 == nameAt:
			default:
				return &replyError{raw: reply}
			}
			return nil
		})
	}
	if err == nil && reselect {
		_, err = d.roundTrip(nc, br, resp.AppendCommand(nil, "SELECT", strconv.Itoa(db)), 1)
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if ix := d.setup.Load(); shared && ix != nil && len(ix.loadCmds) > 0 {
		if err := d.exchange(nc, br, ix.load, len(ix.loadCmds), func([]byte) error { return nil }); err != nil {
			nc.Close()
			return nil, nil, err
		}
	}
	return nc, br, nil
}

// roundTrip writes cmds (n commands) and reads n replies within the read timeout; the first
// error reply ends it as a *replyError.
func (d *dialer) roundTrip(nc net.Conn, br *bufio.Reader, cmds []byte, n int) ([]byte, error) {
	var out []byte
	err := d.exchange(nc, br, cmds, n, func(reply []byte) error {
		if reply[0] == '-' {
			return &replyError{raw: reply}
		}
		out = append(out, reply...)
		return nil
	})
	return out, err
}

// exchange writes cmds (n commands) and passes each of the n raw replies to each, all within
// the read timeout. Transport failures are wrapped as "upstream unavailable".
func (d *dialer) exchange(nc net.Conn, br *bufio.Reader, cmds []byte, n int, each func([]byte) error) error {
	_ = nc.SetDeadline(time.Now().Add(d.readTimeout))
	defer nc.SetDeadline(time.Time{})
	if _, err := nc.Write(cmds); err != nil {
		return unavailable(err)
	}
	var buf []byte
	for range n {
		var err error
		if buf, err = resp.AppendReply(buf[:0], br); err != nil {
			return unavailable(err)
		}
		if err := each(buf); err != nil {
			return err
		}
	}
	return nil
}

// oneShot dials a connection in state key, sends raw (n commands) and returns the raw reply
// of the first: the proxy's way to ask Redis itself, e.g. whether AUTH credentials are valid.
// rest, if not nil, gets the replies of the others, in order.
func (d *dialer) oneShot(ctx context.Context, key poolKey, raw []byte, n int, rest func(reply []byte)) ([]byte, error) {
	nc, br, err := d.dial(ctx, key, "", false)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	var out []byte
	err = d.exchange(nc, br, raw, n, func(reply []byte) error {
		if out == nil {
			out = append([]byte{}, reply...)
		} else if rest != nil {
			rest(reply)
		}
		return nil
	})
	return out, err
}

// replyError is an error reply Redis gave to a setup command, kept raw for the client.
type replyError struct{ raw []byte }

func (e *replyError) Error() string { return string(e.raw[1 : len(e.raw)-2]) }

// request is one client's run of consecutive shared-route commands. A client has at most one
// in flight, so each client reuses a single request (and its buffers and channel).
type request struct {
	cmds   []redcon.Command
	script bool // cmds include a client's script call: later requests are held behind it
	moved  bool // it was held and is to be sent elsewhere: nothing was sent
	// handoff, if set, runs once the commands are written or queued in order (client.handedOff).
	handoff func()
	// err: the connection failed before every reply was in; ends covers those that were.
	// Turning the missing ones into error replies is the client side's (request.fillLost).
	err   error
	reply []byte // raw replies, in order, or error replies for the unanswered tail
	ends  []int  // ends[i]: end of command i's reply in reply
	// done receives true once the reply is complete, and false when a streamed part is ready
	// (newDone).
	done  chan bool
	start time.Time
	rtt   time.Duration // from start to the last reply (PROXY SLOWLOG)

	// Streaming (stream.go): with stream set, the reader hands complete replies over in parts
	// (then reply and ends hold only those after the last part; streamed counts the others),
	// done signals one (false), and sink writes them to the client while the request waits. limit
	// bounds the bytes handed over and not yet written (pending; 0: no bound): past it, over is
	// set, overflow runs (it disconnects the client) and the rest are dropped. pmu guards parts,
	// pending and over.
	stream   bool
	streamed int
	sink     func()
	overflow func()
	limit    int64
	pmu      sync.Mutex
	parts    []replyPart
	pending  int64
	over     bool
}

// wait waits for the request's replies, writing the parts handed over meanwhile.
func (r *request) wait() { r.waitOr(nil) }

// waitOr is wait, or until stop receives (false); a request released from behind another
// client's script streams while it waits too.
func (r *request) waitOr(stop <-chan time.Time) bool {
	for {
		if stop == nil { // a plain receive: a select was 4% of the proxy's CPU at -P 1
			if <-r.done {
				return true
			}
		} else {
			select {
			case final := <-r.done:
				if final {
					return true
				}
			case <-stop:
				return false
			}
		}
		if r.sink != nil {
			r.sink() // a streamed part is ready
		}
	}
}

// newDone makes a request's done channel. Room for two: one part signal (sent only into an
// empty channel) and the final one, so the final send never blocks the reader behind a client
// still writing an earlier part.
func newDone() chan bool { return make(chan bool, 2) }

// replaceReply puts reply in place of command i's.
func (r *request) replaceReply(i int, reply []byte) {
	start, end := r.replyStart(i), r.ends[i]
	delta := len(reply) - (end - start)
	r.reply = slices.Insert(slices.Delete(r.reply, start, end), start, reply...)
	for j := i; j < len(r.ends); j++ {
		r.ends[j] += delta
	}
}

// replyStart is where command i's reply starts in reply.
func (r *request) replyStart(i int) int {
	if i == 0 {
		return 0
	}
	return r.ends[i-1]
}

// sharedConn is an upstream connection shared by many clients, driven like an event loop.
// Submitters append their commands to one write buffer. If nothing is outstanding on the
// connection the submitter writes at once (lowest latency when idle); otherwise the commands
// wait until the reader has consumed every reply already received, and the reader then writes
// everything buffered meanwhile. Under load the commands of many clients thus reach Redis in one
// write, and Redis spends a fraction of the per-request cost. The reader hands replies back in
// submission order.
type sharedConn struct {
	nc   net.Conn
	br   *bufio.Reader
	dead atomic.Bool
	m    *metrics
	gen  uint64 // the dialer's gen when it was dialed
	// lastDone: when a request on it last completed, unix ns; inflight: requests submitted
	// and not completed (pool.leastRecent).
	lastDone atomic.Int64
	inflight atomic.Int32
	// timeout bounds the wait for a reply (and a write) while requests are outstanding
	// (Options.CommandTimeout; 0: none). armed is when the read deadline was last set (unix
	// ns; 0: none set), guarded by mu.
	timeout time.Duration
	armed   int64

	mu          sync.Mutex
	wbuf        []byte
	spare       []byte
	writing     bool       // a goroutine is inside writeLocked
	outstanding int        // requests written, not yet completed
	unwritten   int        // requests whose commands are in wbuf
	queue       []*request // submitted; queue[head:] not yet taken by the reader; order = write order
	head        int
	err         error
	// scripts counts the submitted requests with a client's script call not yet answered,
	// scriptSince is when the oldest of them was submitted. Once one has been outstanding for
	// holdAfter, new requests wait in held instead of being written behind it.
	scripts     int
	scriptSince time.Time
	held        []*request
	// busy is how long Redis lets a script run before it answers others -BUSY
	// (busy-reply-threshold, read by the pools).
	busy *atomic.Int64
	// retired: requests were held past the busy threshold, so the script may run until killed
	// (Redis answers -BUSY to everyone else, but never to what waits on this connection). The
	// pool replaces it; it closes once its outstanding replies are in.
	retired bool
}

// holdAfter: a script call outstanding this long may be a long one, so no other client's
// request is written behind it any more (a request already behind it waits for it, as direct
// clients do until Redis answers them -BUSY). Scripts are usually answered in microseconds:
// requests of other clients pipeline behind them as behind any command.
const holdAfter = time.Millisecond

// busyMargin: held requests are moved to a new connection this long after the script passed
// Redis' busy threshold, when Redis answers new connections (-BUSY); before that it answers
// nobody, and a move would only wait for the new connection's setup instead.
const busyMargin = 20 * time.Millisecond

func newSharedConn(nc net.Conn, br *bufio.Reader, m *metrics, busy *atomic.Int64, gen uint64, timeout time.Duration) *sharedConn {
	u := &sharedConn{nc: nc, br: br, m: m, busy: busy, gen: gen, timeout: timeout}
	u.lastDone.Store(time.Now().UnixNano()) // idle since its dial
	go u.readLoop()
	return u
}

var (
	// errNotSent means the connection was already dead: nothing was sent, so a retry is safe.
	errNotSent = errors.New("upstream connection closed before send")
	// errMoved means the request waited behind a script that passed Redis' busy threshold and
	// was not sent: it goes on the connection that replaces this one.
	errMoved = errors.New("upstream connection held by a busy script")
)

// do sends req's commands and waits for their replies (req.err if the connection fails after
// sending). It returns errNotSent, with req untouched, if the connection was already dead or
// retired, and errMoved if req waited behind a busy script: then it is to be sent elsewhere.
func (u *sharedConn) do(req *request) error {
	req.reply, req.ends, req.moved, req.err = req.reply[:0], req.ends[:0], false, nil
	req.streamed, req.pending, req.over = 0, 0, false
	req.start = time.Now()
	u.mu.Lock()
	if u.err != nil || u.retired {
		u.mu.Unlock()
		return errNotSent
	}
	if u.scripts > 0 && (len(u.held) > 0 || time.Since(u.scriptSince) >= holdAfter) {
		u.held = append(u.held, req)
		deadline := u.scriptSince.Add(time.Duration(u.busy.Load()) + busyMargin)
		u.mu.Unlock()
		if req.handoff != nil {
			req.handoff()
		}
		if !u.waitHeld(req, deadline) {
			return errMoved
		}
	} else {
		u.inflight.Add(1)
		u.submitLocked(req)
		if u.outstanding == 0 && !u.writing {
			u.writeLocked()
		}
		u.mu.Unlock()
		if req.handoff != nil {
			req.handoff()
		}
		req.wait()
		now := time.Now()
		u.lastDone.Store(now.UnixNano()) // before inflight: idleTooLong reads them together
		u.inflight.Add(-1)
		req.rtt = now.Sub(req.start)
		u.m.upstreamRTT.Observe(req.rtt.Seconds())
		return nil
	}
	now := time.Now()
	u.lastDone.Store(now.UnixNano())
	req.rtt = now.Sub(req.start)
	u.m.upstreamRTT.Observe(req.rtt.Seconds())
	return nil
}

// submitLocked appends req's commands to the write buffer and queues it for its replies.
func (u *sharedConn) submitLocked(req *request) {
	for i := range req.cmds {
		u.wbuf = append(u.wbuf, req.cmds[i].Raw...)
	}
	u.unwritten++
	u.queue = append(u.queue, req)
	if req.script {
		if u.scripts++; u.scripts == 1 {
			u.scriptSince = time.Now()
		}
	}
}

// waitHeld waits for a held request: it is released behind the script calls before it and
// completes (true), or at deadline (the script is past Redis' busy threshold) the connection is
// retired and every request still held leaves it unsent (false; also when the connection fails
// meanwhile).
func (u *sharedConn) waitHeld(req *request, deadline time.Time) bool {
	t := time.NewTimer(max(time.Until(deadline), time.Millisecond))
	defer t.Stop()
	if req.waitOr(t.C) {
		return !req.moved
	}
	u.mu.Lock()
	if slices.Contains(u.held, req) {
		u.retired = true
		u.dead.Store(true) // the pool dials a replacement
		u.m.scriptHolds.Inc()
		u.moveHeldLocked()
		u.closeIfDrainedLocked()
	}
	u.mu.Unlock()
	req.wait()
	return !req.moved
}

// moveHeldLocked completes every held request unsent, to be sent elsewhere.
func (u *sharedConn) moveHeldLocked() {
	for _, r := range u.held {
		r.moved = true
		r.done <- true
	}
	clear(u.held)
	u.held = u.held[:0]
}

// releaseHeldLocked submits the held requests in order, up to and including the next one with
// a script call (those after it stay held behind it).
func (u *sharedConn) releaseHeldLocked() {
	n := 0
	for n < len(u.held) {
		r := u.held[n]
		n++
		u.submitLocked(r)
		if r.script {
			break
		}
	}
	rest := copy(u.held, u.held[n:])
	clear(u.held[rest:])
	u.held = u.held[:rest]
}

func (u *sharedConn) isRetired() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.retired
}

func (u *sharedConn) isClosed() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err != nil
}

// errRetired ends a retired connection once it has nothing outstanding.
var errRetired = errors.New("shared connection retired")

// closeIfDrainedLocked closes a retired connection that has nothing left to answer.
func (u *sharedConn) closeIfDrainedLocked() {
	if u.retired && u.err == nil && u.outstanding == 0 && u.unwritten == 0 && len(u.held) == 0 {
		u.err = errRetired
		u.nc.Close()
	}
}

// writeLocked writes the buffer until it is empty. The lock is released during each write so
// others can append for the next one; writing keeps a second writer out meanwhile.
func (u *sharedConn) writeLocked() {
	u.writing = true
	for len(u.wbuf) > 0 && u.err == nil {
		buf := u.wbuf
		u.wbuf = u.spare[:0]
		u.outstanding += u.unwritten
		u.unwritten = 0
		if u.timeout > 0 {
			now := time.Now()
			_ = u.nc.SetDeadline(now.Add(u.timeout)) // the write, and the replies it asks for
			u.armed = now.UnixNano()
		}
		u.mu.Unlock()
		_, err := u.nc.Write(buf)
		u.mu.Lock()
		if cap(buf) <= 1<<20 {
			u.spare = buf[:0]
		}
		if err != nil {
			u.failLocked(u.timedOut(err))
		}
	}
	u.writing = false
}

// readLoop owns the read side: it waits for reply bytes (so a closed connection is noticed even
// when idle), takes the oldest request and reads exactly one reply per command into it. Once it
// has consumed every reply received so far, it writes what clients queued meanwhile.
func (u *sharedConn) readLoop() {
	for {
		if _, err := u.br.Peek(1); err != nil {
			u.fail(u.timedOut(err))
			return
		}
		u.mu.Lock()
		var req *request
		if u.head < len(u.queue) && u.outstanding > 0 {
			req = u.queue[u.head]
			u.queue[u.head] = nil
			u.head++
			if u.head == len(u.queue) {
				// Drained: reuse the backing array from its start instead of appending past it.
				u.queue, u.head = u.queue[:0], 0
			}
		}
		u.mu.Unlock()
		if req == nil {
			u.fail(ErrUpstreamDesync)
			return
		}
		for range req.cmds {
			start := len(req.reply)
			for {
				mark := len(req.reply)
				var err error
				if req.reply, err = resp.AppendReply(req.reply, u.br); err != nil {
					err = u.timedOut(err)
					req.reply, req.err = req.reply[:start], err
					req.done <- true
					u.fail(err)
					return
				}
				// A RESP3 push is not a reply (DEBUG PROTOCOL push sends one before its
				// reply): it goes to the client whose command caused it, with the reply.
				if req.reply[mark] != '>' {
					break
				}
			}
			req.ends = append(req.ends, len(req.reply))
			if req.stream && len(req.reply) >= streamPart {
				req.handOver()
			}
		}
		script := req.script // req is the client's again once done
		req.done <- true
		u.mu.Lock()
		u.outstanding--
		if script {
			u.scripts--
			if u.scripts > 0 {
				u.scriptSince = time.Now() // the next one's clock starts now at the latest
			} else if len(u.held) > 0 {
				u.releaseHeldLocked()
			}
		}
		if len(u.wbuf) > 0 && !u.writing && (u.outstanding == 0 || u.br.Buffered() == 0) {
			u.writeLocked()
		}
		if u.armed != 0 {
			u.rearmLocked()
		}
		u.closeIfDrainedLocked()
		u.mu.Unlock()
	}
}

// rearmLocked keeps the read deadline timeout ahead while replies are outstanding (renewed once
// a quarter of it has passed, not per reply), and clears it once none is: an idle connection
// waits for nothing.
func (u *sharedConn) rearmLocked() {
	if u.outstanding == 0 {
		_ = u.nc.SetReadDeadline(time.Time{})
		u.armed = 0
		return
	}
	if now := time.Now(); now.UnixNano()-u.armed > int64(u.timeout/4) {
		_ = u.nc.SetReadDeadline(now.Add(u.timeout))
		u.armed = now.UnixNano()
	}
}

// timedOut names a deadline that passed for what it is: Redis did not answer within timeout.
func (u *sharedConn) timedOut(err error) error {
	var ne net.Error
	if u.timeout > 0 && errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("no progress within %v (upstream.command_timeout)", u.timeout)
	}
	return err
}

func (u *sharedConn) fail(err error) {
	u.mu.Lock()
	u.failLocked(err)
	u.mu.Unlock()
}

// failLocked marks the connection dead and answers every queued request with error replies.
func (u *sharedConn) failLocked(err error) {
	if u.err == nil {
		u.err = err
		u.dead.Store(true)
		u.nc.Close()
		u.m.upstreamFailures.Inc()
	}
	for _, req := range u.queue[u.head:] {
		req.err = err
		req.done <- true
	}
	u.moveHeldLocked() // never sent: they go to another connection
	u.queue, u.head = nil, 0
	u.wbuf = u.wbuf[:0]
}

func (u *sharedConn) close() { u.fail(net.ErrClosed) }

// retire takes u out of use: a request sent to it from now on gets errNotSent (and is sent
// elsewhere), and it closes once it has answered what it has.
func (u *sharedConn) retire() {
	u.mu.Lock()
	u.retired = true
	u.dead.Store(true)
	u.closeIfDrainedLocked()
	u.mu.Unlock()
}
