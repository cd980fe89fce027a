package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// incrLoad is one client of TestUpstreamKilledMidPipeline: it sends pipelines of INCR on a key
// of its own and checks every reply. Between two integer replies with no error reply between
// them the counter must go up by exactly one (or restart at 1 when Redis came back empty): a
// missing, doubled, shifted or foreign reply breaks that.
type incrLoad struct {
	addr, key string
	batch     int
	// setup, if set, is sent ahead of the first batch on every new connection, e.g. CLIENT
	// TRACKINGINFO to put the client on a dedicated upstream connection; its reply must not be an
	// integer.
	setup []byte

	restarted *atomic.Bool  // set once the upstream is back
	stop      chan struct{} // closed to end the loop
	// draining, if set, marks a graceful shutdown: the proxy may then close the connection
	// after a good reply (at a batch boundary as far as the client can tell).
	draining *atomic.Bool

	// Written by the load goroutine; read by the test after done, or through the atomics.
	batches         atomic.Int64 // batches fully answered
	cleanAfterStart atomic.Int64 // batches of only integer replies begun after the restart
	ok, errs        int
	last            int64 // the last INCR reply
	closes          int   // connections that ended (the proxy closed them)
	silentCloses    int   // of those, closes of a dedicated client after a good reply
	dialFails       int
	errSample       string
	violations      []string
}

func (l *incrLoad) violate(format string, args ...any) {
	if len(l.violations) < 10 {
		l.violations = append(l.violations, fmt.Sprintf(format, args...))
	}
}

// run loops for at most maxBatches batches or until stop is closed.
func (l *incrLoad) run(maxBatches int) {
	var (
		nc   net.Conn
		br   *bufio.Reader
		prev int64 // last counter value seen with no error since; 0: unknown
		// lastErr: the last reply on this connection was an -ERR. The proxy may close a
		// connection only right after error replies (maybe in the previous batch, which it
		// answered in full), never after a good reply.
		lastErr bool
		buf     []byte
	)
	defer func() {
		if nc != nil {
			nc.Close()
		}
	}()
	req := []byte{}
	for range l.batch {
		req = append(req, encode("INCR", l.key)...)
	}
	for range maxBatches {
		select {
		case <-l.stop:
			return
		default:
		}
		out, setupReply := req, false
		if nc == nil {
			var err error
			if nc, err = net.DialTimeout("tcp", l.addr, time.Second); err != nil {
				l.dialFails++
				time.Sleep(20 * time.Millisecond)
				continue
			}
			br = bufio.NewReaderSize(nc, 64<<10)
			prev, lastErr = 0, false
			if l.setup != nil {
				out, setupReply = append(append([]byte{}, l.setup...), req...), true
			}
		}
		afterRestart := l.restarted.Load()
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write(out); err != nil {
			// The proxy closed the connection after the previous batch's error replies.
			nc.Close()
			nc = nil
			l.closes++
			continue
		}
		clean := true
		n := l.batch
		if setupReply {
			n++
		}
		for i := 0; i < n; i++ {
			var err error
			buf, err = resp.AppendReply(buf[:0], br)
			if err != nil {
				var ne net.Error
				switch {
				case errors.As(err, &ne) && ne.Timeout():
					l.violate("command %d of a batch: no reply within 10s (missing reply)", i)
				case lastErr || l.draining != nil && l.draining.Load():
				case l.setup != nil:
					// A dedicated client whose upstream connection dies while none of its
					// commands is outstanding (say the rest of its pipeline is not read yet) is
					// closed without an error reply, as if Redis itself had gone: proxy/dedicated.go
					// upstreamGone. Those commands never ran.
					l.silentCloses++
				default:
					l.violate("connection ended (%v) after %d replies of a batch, the last one not an error reply", err, i)
				}
				nc.Close()
				nc = nil
				l.closes++
				clean = false
				break
			}
			switch r := string(buf); {
			case setupReply && i == 0:
				if strings.HasPrefix(r, "-") || strings.HasPrefix(r, ":") {
					lastErr, clean = r[0] == '-', false
				}
				if r[0] == ':' {
					l.violate("integer reply %q to the setup command", r)
				}
			case r[0] == ':':
				v, perr := strconv.ParseInt(r[1:len(r)-2], 10, 64)
				switch {
				case perr != nil:
					l.violate("bad integer reply %q", r)
				case prev != 0 && v != prev+1 && v != 1:
					l.violate("INCR reply %d after %d: shifted, missing or foreign reply", v, prev)
				}
				prev, lastErr, l.last = v, false, v
				l.ok++
			case strings.HasPrefix(r, "-ERR "):
				// The command may or may not have run: the next value is unknown.
				prev, lastErr, clean = 0, true, false
				if !strings.Contains(r, "upstream") {
					l.violate("error reply that does not name the upstream: %q", r)
				}
				l.errs++
				if l.errSample == "" {
					l.errSample = r
				}
			default:
				l.violate("unexpected reply to INCR: %q", clip(r))
				prev, lastErr, clean = 0, false, false
			}
		}
		if nc != nil {
			l.batches.Add(1)
		}
		if clean && afterRestart {
			l.cleanAfterStart.Add(1)
		}
	}
}

// TestUpstreamKilledMidPipeline kills redis-server while clients stream pipelines of INCR, then
// restarts it: each client gets, per command, its own reply or an -ERR (never a missing or
// shifted one), the proxy stays up, and clients work again after the restart. Two of the six
// clients start with HELLO 2, which puts them on dedicated upstream connections.
func TestUpstreamKilledMidPipeline(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr())

	const clients, batch, maxBatches = 6, 500, 400
	var restarted atomic.Bool
	stop := make(chan struct{})
	loads := make([]*incrLoad, clients)
	var wg sync.WaitGroup
	for i := range loads {
		loads[i] = &incrLoad{addr: p.Addr, key: fmt.Sprintf("fault:ctr:%d", i), batch: batch,
			restarted: &restarted, stop: stop}
		if i%3 == 2 { // a third of the clients on dedicated upstream connections
			loads[i].setup = encode("CLIENT", "TRACKINGINFO") // about this connection: moves the client to a dedicated one
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			loads[i].run(maxBatches)
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		select {
		case <-allDone:
		case <-time.After(30 * time.Second):
			t.Fatal("load clients did not finish within 30s of stop")
		}
	}
	defer stopLoad()

	each := func(cond func(*incrLoad) bool) func() bool {
		return func() bool {
			for _, l := range loads {
				if !cond(l) {
					return false
				}
			}
			return true
		}
	}
	if !waitFor(10*time.Second, each(func(l *incrLoad) bool { return l.batches.Load() >= 3 })) {
		t.Fatal("clients did not get going within 10s")
	}
	srv.Stop()
	time.Sleep(300 * time.Millisecond) // clients run into the dead upstream meanwhile
	if !p.alive() {
		t.Fatal("proxy exited when the upstream died")
	}
	srv.Restart()
	restarted.Store(true)
	if !waitFor(10*time.Second, each(func(l *incrLoad) bool { return l.cleanAfterStart.Load() >= 3 })) {
		t.Error("not every client got clean batches within 10s of the restart")
	}
	stopLoad()

	var ok, errs int
	for i, l := range loads {
		t.Logf("client %d: %d batches, %d integer replies, %d error replies, %d closes (%d without an error reply), %d dial failures, clean after restart %d; error e.g. %q",
			i, l.batches.Load(), l.ok, l.errs, l.closes, l.silentCloses, l.dialFails, l.cleanAfterStart.Load(), l.errSample)
		for _, v := range l.violations {
			t.Errorf("client %d: %s", i, v)
		}
		ok, errs = ok+l.ok, errs+l.errs
	}
	t.Logf("all clients: %d integer replies, %d error replies", ok, errs)
	if errs == 0 {
		t.Error("no client saw an error reply: the upstream failure was not exercised")
	}
	if !p.alive() {
		t.Fatal("proxy exited")
	}
	// A new connection works: pipelined INCRs on a fresh key count from 1.
	c := dialRESP(t, p.Addr)
	var req []byte
	for range 100 {
		req = append(req, encode("INCR", "fault:fresh")...)
	}
	c.send(req)
	for i := range 100 {
		if r, err := c.reply(5 * time.Second); err != nil || r != fmt.Sprintf(":%d\r\n", i+1) {
			t.Fatalf("fresh connection, INCR %d: %q, %v", i+1, r, err)
		}
	}
}

// TestUpstreamUnreachable points the proxy at a closed port: a client's commands get -ERR
// replies that name the upstream, and then the connection is closed.
func TestUpstreamUnreachable(t *testing.T) {
	t.Parallel()
	dead := net.JoinHostPort("127.0.0.1", strconv.Itoa(redistest.FreePort(t)))
	p := startProxy(t, dead)

	tests := []struct {
		name string
		cmds [][]string
	}{
		{"first_command", [][]string{{"PING"}}},
		{"pipeline", [][]string{{"SET", "a", "1"}, {"GET", "a"}, {"INCR", "n"}}},
		{"select", [][]string{{"SELECT", "1"}}},       // answered by the proxy, but it dials
		{"auth", [][]string{{"AUTH", "pw"}}},          // checked against Redis on a fresh connection
		{"blocking", [][]string{{"BLPOP", "l", "1"}}}, // dedicated connection
		{"transaction", [][]string{{"MULTI"}, {"GET", "a"}, {"EXEC"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dialRESP(t, p.Addr)
			var req []byte
			for _, cmd := range tc.cmds {
				req = append(req, encode(cmd...)...)
			}
			c.send(req)
			for i := range tc.cmds {
				r, err := c.reply(5 * time.Second)
				if err != nil {
					t.Fatalf("command %d %q: no reply: %v", i, tc.cmds[i], err)
				}
				if !strings.HasPrefix(r, "-ERR ") || !strings.Contains(r, "upstream") {
					t.Fatalf("command %d %q: reply %q, want -ERR naming the upstream", i, tc.cmds[i], r)
				}
			}
			c.expectClosed(3 * time.Second)
		})
	}
	t.Run("probes", func(t *testing.T) {
		t.Parallel()
		if code, body, err := httpGet(p.HTTP, "/readyz"); err != nil || code != http.StatusServiceUnavailable {
			t.Errorf("/readyz: %d %q %v, want 503", code, body, err)
		}
		if code, _, err := httpGet(p.HTTP, "/healthz"); err != nil || code != http.StatusOK {
			t.Errorf("/healthz: %d %v, want 200", code, err)
		}
	})
}

// TestProbesFollowUpstream: /readyz is 503 while Redis is down and 200 when it is back;
// /healthz is 200 throughout.
func TestProbesFollowUpstream(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr())
	status := func(path string) int {
		code, _, err := httpGet(p.HTTP, path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return code
	}
	if got := status("/readyz"); got != http.StatusOK {
		t.Fatalf("/readyz with Redis up: %d", got)
	}
	srv.Stop()
	if !waitFor(5*time.Second, func() bool { return status("/readyz") == http.StatusServiceUnavailable }) {
		t.Fatal("/readyz not 503 within 5s of Redis going down")
	}
	if code, body, _ := httpGet(p.HTTP, "/readyz"); !strings.Contains(body, "upstream") {
		t.Errorf("/readyz while down: %d %q, want the reason to name the upstream", code, body)
	}
	if got := status("/healthz"); got != http.StatusOK {
		t.Errorf("/healthz with Redis down: %d", got)
	}
	srv.Restart()
	if !waitFor(5*time.Second, func() bool { return status("/readyz") == http.StatusOK }) {
		t.Fatal("/readyz not 200 within 5s of Redis coming back")
	}
	if got := status("/healthz"); got != http.StatusOK {
		t.Errorf("/healthz after restart: %d", got)
	}
}

// repliesUntilClose reads whole replies until the connection ends (or timeout passes, which
// fails the test).
func repliesUntilClose(t *testing.T, c *respConn, timeout time.Duration) []string {
	t.Helper()
	var out []string
	deadline := time.Now().Add(timeout)
	for {
		r, err := c.reply(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("connection still open after %v; replies so far %q", timeout, out)
			}
			return out
		}
		out = append(out, r)
	}
}

// TestSIGTERMUnderLoad: SIGTERM while clients stream pipelines of INCR. The process exits 0
// within the shutdown timeout, and every command the proxy carried out was answered before it
// closed the client: the counter in Redis equals the last reply the client got. Most clients
// are on dedicated upstream connections (HELLO 2). Whether a batch is caught in flight is a
// matter of timing, so three rounds run, each with its own proxy.
func TestSIGTERMUnderLoad(t *testing.T) {
	t.Parallel()
	for round := range 3 {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			t.Parallel()
			sigtermUnderLoad(t)
		})
	}
}

func sigtermUnderLoad(t *testing.T) {
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr(), "SESSIONPROXY_SHUTDOWN_TIMEOUT=3s")
	const clients = 8
	var restarted, draining atomic.Bool
	stop := make(chan struct{})
	loads := make([]*incrLoad, clients)
	var wg sync.WaitGroup
	for i := range loads {
		loads[i] = &incrLoad{addr: p.Addr, key: fmt.Sprintf("term:ctr:%d", i), batch: 200,
			restarted: &restarted, stop: stop, draining: &draining}
		if i%4 != 0 {
			loads[i].setup = encode("CLIENT", "TRACKINGINFO")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			loads[i].run(5000)
		}()
	}
	var stopOnce sync.Once
	stopLoad := func() {
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
	}
	defer stopLoad()
	if !waitFor(10*time.Second, func() bool {
		for _, l := range loads {
			if l.batches.Load() < 3 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("clients did not get going within 10s")
	}
	draining.Store(true)
	code, elapsed := p.stop()
	if code != 0 || elapsed > 3*time.Second {
		t.Errorf("exit %d after %v; want 0 within the 3s shutdown timeout", code, elapsed)
	}
	stopLoad()

	r := dialRESP(t, srv.Addr())
	for i, l := range loads {
		for _, v := range l.violations {
			t.Errorf("client %d: %s", i, v)
		}
		if l.errs > 0 {
			t.Errorf("client %d: %d error replies during a graceful shutdown (e.g. %q)", i, l.errs, l.errSample)
		}
		got := r.do("GET", l.key)
		if want := fmt.Sprintf("$%d\r\n%d\r\n", len(strconv.FormatInt(l.last, 10)), l.last); got != want {
			mode := "shared"
			if l.setup != nil {
				mode = "dedicated"
			}
			t.Errorf("client %d (%s): Redis ran INCR up to %q but the client's last reply was %d: commands carried out without a reply",
				i, mode, strings.TrimSpace(strings.ReplaceAll(got, "\r\n", " ")), l.last)
		}
	}
}

// blockedClients reads redis-server's blocked_clients.
func blockedClients(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	c := dialRESP(t, srv.Addr())
	defer c.close()
	info := c.do("INFO", "clients")
	_, rest, ok := strings.Cut(info, "blocked_clients:")
	if !ok {
		t.Fatalf("INFO clients without blocked_clients: %q", info)
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(rest, "\r\n", 2)[0]))
	if err != nil {
		t.Fatalf("blocked_clients: %v", err)
	}
	return n
}

// TestSIGTERMDrain: SIGTERM with clients in various states ends the process with status 0
// within the shutdown timeout (2s), and every client is disconnected.
func TestSIGTERMDrain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		blocked bool // a client waits in BLPOP
		sub     bool // a client is subscribed
		down    bool // Redis is down when the signal comes
		bound   time.Duration
	}{
		// The blocked client never becomes idle: the drain waits the whole timeout.
		{name: "blpop_and_idle", blocked: true, bound: 2*time.Second + 2*time.Second},
		{name: "idle_only", bound: 2 * time.Second},
		{name: "subscriber_and_idle", sub: true, bound: 2 * time.Second},
		{name: "upstream_down", down: true, bound: 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			p := startProxy(t, srv.Addr(), "SESSIONPROXY_SHUTDOWN_TIMEOUT=2s")
			idle := dialRESP(t, p.Addr)
			if r := idle.do("PING"); r != "+PONG\r\n" {
				t.Fatalf("PING: %q", r)
			}
			others := []*respConn{idle}
			if tc.blocked {
				c := dialRESP(t, p.Addr)
				c.send(encode("BLPOP", "drain:list", "0"))
				if !waitFor(5*time.Second, func() bool { return blockedClients(t, srv) == 1 }) {
					t.Fatal("BLPOP did not block in redis-server")
				}
				others = append(others, c)
			}
			if tc.sub {
				c := dialRESP(t, p.Addr)
				if r := c.do("SUBSCRIBE", "drain:chan"); !strings.Contains(r, "subscribe") {
					t.Fatalf("SUBSCRIBE: %q", r)
				}
				others = append(others, c)
			}
			if tc.down {
				srv.Stop()
			}
			code, elapsed := p.stop()
			t.Logf("exit %d after %v", code, elapsed.Round(time.Millisecond))
			if code != 0 {
				t.Errorf("exit status %d, want 0", code)
			}
			if elapsed > tc.bound {
				t.Errorf("exit took %v, want under %v", elapsed, tc.bound)
			}
			for _, c := range others {
				c.expectClosed(time.Second)
			}
		})
	}
}

// TestIdleClientsAcrossRestart: Redis restarts while clients are idle. Clients on the shared
// path carry on without an error, each still in its own DB; a client on a dedicated connection
// (its state is gone with the old Redis) is disconnected without stray bytes.
func TestIdleClientsAcrossRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr())
	db0, db3, ded := dialRESP(t, p.Addr), dialRESP(t, p.Addr), dialRESP(t, p.Addr)
	if r := db0.do("SET", "rs:k", "zero"); r != "+OK\r\n" {
		t.Fatalf("SET in DB 0: %q", r)
	}
	if r := db3.do("SELECT", "3"); r != "+OK\r\n" {
		t.Fatalf("SELECT 3: %q", r)
	}
	if r := db3.do("SET", "rs:k", "three"); r != "+OK\r\n" {
		t.Fatalf("SET in DB 3: %q", r)
	}
	// CLIENT ID is the proxy's answer now; TRACKINGINFO is about the connection: it moves the
	// client to a dedicated one.
	if r := ded.do("CLIENT", "TRACKINGINFO"); !strings.HasPrefix(r, "*") {
		t.Fatalf("CLIENT TRACKINGINFO: %q", clip(r))
	}
	srv.Restart()
	// Let the proxy see its old connections end.
	time.Sleep(200 * time.Millisecond)

	for _, c := range []struct {
		name string
		c    *respConn
		val  string
	}{{"db0", db0, "zero-again"}, {"db3", db3, "three-again"}} {
		if r := c.c.do("GET", "rs:k"); r != "$-1\r\n" {
			t.Errorf("%s: GET after the restart (data gone): %q", c.name, r)
		}
		if r := c.c.do("SET", "rs:k", c.val); r != "+OK\r\n" {
			t.Errorf("%s: SET after the restart: %q", c.name, r)
		}
	}
	direct := dialRESP(t, srv.Addr())
	if r := direct.do("GET", "rs:k"); r != "$10\r\nzero-again\r\n" {
		t.Errorf("DB 0 in redis-server: %q", r)
	}
	direct.do("SELECT", "3")
	if r := direct.do("GET", "rs:k"); r != "$11\r\nthree-again\r\n" {
		t.Errorf("DB 3 in redis-server: %q (the DB 3 client lost its DB)", r)
	}
	ded.send(encode("PING"))
	if r, err := ded.reply(2 * time.Second); err == nil && r != "+PONG\r\n" && !strings.HasPrefix(r, "-ERR") {
		t.Errorf("dedicated client after the restart: %q", r)
	}
	ded.expectClosed(2 * time.Second)
}

// TestMaxClients: with limits.max_clients 3 the 4th connection gets the Redis error and is
// closed; once a client leaves, a new one is accepted.
func TestMaxClients(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr(), "SESSIONPROXY_LIMITS_MAX_CLIENTS=3")
	var conns []*respConn
	for i := range 3 {
		c := dialRESP(t, p.Addr)
		if r := c.do("PING"); r != "+PONG\r\n" {
			t.Fatalf("client %d: PING %q", i+1, r)
		}
		conns = append(conns, c)
	}
	fourth := dialRESP(t, p.Addr)
	if r, err := fourth.reply(3 * time.Second); err != nil || r != "-ERR max number of clients reached\r\n" {
		t.Fatalf("4th client: %q, %v", r, err)
	}
	fourth.expectClosed(2 * time.Second)
	for i, c := range conns {
		if r := c.do("PING"); r != "+PONG\r\n" {
			t.Fatalf("client %d after the refusal: PING %q", i+1, r)
		}
	}
	if got := scrapeMetrics(t, p.HTTP)[`sessionproxy_client_rejected_total{reason="max_clients"}`]; got != 1 {
		t.Errorf("rejected_total{reason=max_clients} = %v, want 1", got)
	}
	// Cycles of leaving, refused and dedicated (HELLO) clients must not make the count drift.
	for cycle := range 3 {
		for _, c := range conns {
			c.close()
		}
		conns = conns[:0]
		for i := range 3 {
			var c *respConn
			if !waitFor(5*time.Second, func() bool {
				c = dialRESP(t, p.Addr)
				c.send(encode("HELLO", "2"))
				r, err := c.reply(3 * time.Second)
				if err == nil && strings.HasPrefix(r, "*") {
					return true
				}
				c.close()
				return false
			}) {
				t.Fatalf("cycle %d: client %d not accepted within 5s", cycle, i+1)
			}
			conns = append(conns, c)
		}
		refused := dialRESP(t, p.Addr)
		if r, err := refused.reply(3 * time.Second); err != nil || r != "-ERR max number of clients reached\r\n" {
			t.Fatalf("cycle %d: 4th client: %q, %v", cycle, r, err)
		}
		refused.expectClosed(2 * time.Second)
	}
	conns[0].close()
	if !waitFor(5*time.Second, func() bool {
		nc, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			return false
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := nc.Write(encode("PING")); err != nil {
			return false
		}
		line, _ := bufio.NewReader(nc).ReadString('\n')
		return line == "+PONG\r\n"
	}) {
		t.Fatal("no new client accepted within 5s after one left")
	}
}

// TestMalformedInput: protocol errors get Redis' exact error and the connection closes, with a
// bulk over limits.max_bulk_len refused from its header alone, while other clients carry on.
// Each case is also sent straight to redis-server (proto-max-bulk-len 1mb): same bytes back.
func TestMalformedInput(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, "--proto-max-bulk-len", "1mb")
	p := startProxy(t, srv.Addr(), "SESSIONPROXY_LIMITS_MAX_BULK_LEN=1MiB")
	bystander := dialRESP(t, p.Addr)
	if r := bystander.do("SET", "bystander", "here"); r != "+OK\r\n" {
		t.Fatalf("bystander SET: %q", r)
	}

	tests := []struct {
		name string
		send string
		want string
	}{
		{"negative_bulk_len", "*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		// Only the header of a bulk one byte over the limit: refused before any data arrives.
		{"bulk_over_limit", "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$1048577\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"huge_bulk_header", "*2\r\n$3\r\nGET\r\n$4294967296\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"bad_multibulk_len", "*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		{"expected_dollar", "*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, target := range []struct{ name, addr string }{{"redis-server", srv.Addr()}, {"proxy", p.Addr}} {
				c := dialRESP(t, target.addr)
				c.send([]byte(tc.send))
				r, err := c.reply(3 * time.Second)
				if err != nil || r != tc.want {
					t.Errorf("%s: %q, %v; want %q", target.name, r, err, tc.want)
					continue
				}
				c.expectClosed(2 * time.Second)
			}
		})
	}

	// Commands ahead of the bad bytes in the same packet are answered first, as Redis does,
	// whether the client is on the shared path or on a dedicated upstream connection. The
	// outcome may depend on timing inside the proxy, so each mode is tried a few times.
	for _, mode := range []struct{ name, setup string }{
		{"shared", ""},
		{"dedicated_hello", "HELLO 2"},
		{"dedicated_watch", "WATCH pe:w"},
		{"dedicated_multi", "MULTI"},
	} {
		t.Run("after_commands/"+mode.name, func(t *testing.T) {
			for try := range 5 {
				var got [2][]string
				for i, addr := range []string{srv.Addr(), p.Addr} {
					c := dialRESP(t, addr)
					if mode.setup != "" {
						c.do(strings.Fields(mode.setup)...)
					}
					c.send([]byte("*3\r\n$3\r\nSET\r\n$4\r\npe:k\r\n$1\r\nv\r\n*1\r\n$4\r\nPING\r\n*1\r\n$-5\r\n"))
					got[i] = repliesUntilClose(t, c, 3*time.Second)
				}
				if strings.Join(got[0], "") != strings.Join(got[1], "") {
					t.Fatalf("try %d: replies differ:\nredis-server: %q\nproxy:        %q", try, got[0], got[1])
				}
			}
		})
	}

	t.Run("bulk_at_limit", func(t *testing.T) {
		val := strings.Repeat("v", 1<<20)
		c := dialRESP(t, p.Addr)
		if r := c.do("SET", "limit", val); r != "+OK\r\n" {
			t.Fatalf("SET of exactly 1MiB: %q", clip(r))
		}
		if r := c.do("STRLEN", "limit"); r != ":1048576\r\n" {
			t.Fatalf("STRLEN: %q", r)
		}
	})

	if r := bystander.do("GET", "bystander"); r != "$4\r\nhere\r\n" {
		t.Fatalf("bystander after the protocol errors: %q", r)
	}
	if !p.alive() {
		t.Fatal("proxy exited")
	}
	if got := scrapeMetrics(t, p.HTTP)[`sessionproxy_client_errors_total{kind="protocol"}`]; got < float64(len(tests)) {
		t.Errorf("errors_total{kind=protocol} = %v, want >= %d", got, len(tests))
	}
}
