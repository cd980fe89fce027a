package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/netturn"
	"github.com/sessionproxy/sessionproxy/internal/resp"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// Options configure a Server; cmd/sessionproxy builds them from conf.Config.
type Options struct {
	Listen string // client listener, host:port ("" with TLSListen: TLS only)
	// TLSListen, if set, is a second client listener that speaks TLS with ClientTLS (whose
	// GetConfigForClient may hand out reloaded certificates). Plain connections to it fail
	// their handshake and are closed.
	TLSListen string
	ClientTLS *tls.Config
	// ClientTLSVerified says ClientTLS requires a client certificate it verifies: TLS clients
	// are then authenticated, and protected mode does not refuse them.
	ClientTLSVerified bool
	Upstream          string // Redis host:port
	Username          string // ACL user of the proxy's own connections (never lent to clients)
	Password          string
	// ClientPassword, if set, is asked of clients as Redis' requirepass would: -NOAUTH until
	// AUTH <pw> (or AUTH default <pw>, HELLO ... AUTH default <pw>), after which they run as the
	// proxy's user. AUTH as another user is checked by Redis, as without it.
	ClientPassword string
	// Protected is the client listener's protected mode: yes (only 127.0.0.1 and ::1 may
	// connect), no, or auto: yes while nothing asks clients for a password (no ClientPassword,
	// and Redis answers an unauthenticated PING).
	Protected    string
	TLS          *tls.Config // nil: plain TCP to Redis
	DialTimeout  time.Duration
	ReadTimeout  time.Duration // the proxy's own round trips (setup, AUTH check, readiness)
	PoolSize     int           // shared upstream connections per (user, DB)
	MaxClients   int
	MaxDedicated int // clients on upstream connections of their own at once; 0: no bound
	// CommandTimeout bounds how long a shared upstream connection waits for Redis' replies
	// (and a write to it): past it the connection is closed and the commands waiting on it are
	// answered with an error, in order; 0: no bound. A client's connection of its own (blocking
	// commands) has no read bound, but the same write bound.
	CommandTimeout time.Duration
	// OutputBufferLimit bounds the reply bytes the proxy holds for a client that does not read
	// them (Redis' client-output-buffer-limit for normal clients, hard limit): past it the
	// client is disconnected. 0: no bound, as Redis' default.
	OutputBufferLimit int64
	// InputMemoryLimit bounds the bytes of large incomplete commands (64 KiB and more) the proxy
	// holds for all clients together (Redis' maxmemory-clients, for what clients send): the
	// client whose command takes the total past it is disconnected. 0: no bound.
	InputMemoryLimit int64
	// Reload, if set, re-reads the configuration and puts what may change live in force (PROXY
	// RELOAD); it returns what changed, or every reason it did not.
	Reload func() (string, error)
	// ConfigGet, if set, lists the running configuration's settings whose path matches a glob,
	// as (path, value) pairs (PROXY CONFIG GET).
	ConfigGet func(pattern string) [][2]string
	// InfoExtra, if set, adds lines ("name:value") to INFO's # Proxy section: the state of
	// what runs beside the proxy (the reaper).
	InfoExtra func() []string
	// SlowLogSlowerThan and SlowLogMaxLen are PROXY SLOWLOG's threshold (0: off) and length,
	// as Redis' slowlog-log-slower-than and slowlog-max-len.
	SlowLogSlowerThan time.Duration
	SlowLogMaxLen     int
	// Version and Mode are what INFO PROXY reports: the build, and the upstream mode
	// (standalone, sentinel, cluster).
	Version, Mode string
	// DenyCommands are commands ("FLUSHALL") or subcommands ("CONFIG|SET") clients may not run
	// through the proxy: Redis answers them as commands renamed away (deny.go).
	DenyCommands []string
	// RenameCommands are Redis' rename-command for clients: "NAME NEWNAME" runs NAME when a
	// client sends NEWNAME, and NAME is taken away; "NAME" alone takes it away.
	RenameCommands []string
	// IdleTimeout ends a client's connection after this long without a command (Redis'
	// timeout; watchIdle says which clients are exempt); 0: never.
	IdleTimeout     time.Duration
	Limits          resp.Limits
	ShutdownTimeout time.Duration
	// Ordering says when different clients' batches are handed upstream in the order they
	// reached the proxy (orderGate), at a CPU cost per batch.
	Ordering Ordering
	// Poll puts plain client connections' reads on an epoll loop of the proxy's own
	// (resp.Poller, Linux) instead of Go's netpoller: a client batch costs one read, not two.
	Poll       bool
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are kept but not exported

	// Schema says which keys are sessions and how they are indexed (required).
	Schema *rewrite.Schema
	// OnReadonly, if set, runs (at most every 100 ms) when Redis answers a command on a shared
	// connection -READONLY: the master has become a replica, so in sentinel mode the master is
	// looked up again at once rather than at the next poll.
	OnReadonly func()

	// Cluster, if set, puts the proxy in front of a Redis Cluster (Upstream is then unused).
	Cluster *ClusterOptions

	// Repair runs SESSIONS.REINDEX (fix) and SESSIONS.CHECK over one rule (of sch, the rules
	// the command runs under: a reload may change them) of one DB; nil answers them with an
	// error. cmd wires the reaper's implementation in.
	Repair func(ctx context.Context, sch *rewrite.Schema, db, rule int, fix bool) (rewrite.Report, error)
}

// Server is the client-facing side: it accepts connections and runs their commands.
type Server struct {
	clientPW atomic.Pointer[string] // clients.password in force (clientPassword)
	protMu   sync.Mutex             // protected mode's decisions: watchAnon, SetClientPassword
	slow     slowLog                // PROXY SLOWLOG
	// deny is the commands clients may not run (Options.DenyCommands; SetDenyCommands).
	deny atomic.Pointer[denyList]

	// input is the budget of bytes that large incomplete commands of all clients hold
	// (Limits.InputMemoryLimit).
	input *resp.Budget

	opts      Options
	log       *slog.Logger
	m         *metrics
	table     *commandTable
	dialer    *dialer
	pools     *pools
	cluster   *clusterState // nil: one Redis (standalone, sentinel)
	defaultID identity      // the proxy's own user: its connections, and clients that gave ClientPassword
	// anonID is a client before any AUTH: Redis' default user, with no password (Redis then
	// judges it as it judges a direct client that never sent AUTH).
	anonID    identity
	protected atomic.Bool // protected mode is on now (Options.Protected)
	anonOpen  atomic.Bool // Redis serves unauthenticated clients (watchAnon)
	// ndedicated counts the clients holding (or getting) a connection of their own.
	ndedicated atomic.Int64
	// queryBuf is Redis' client-query-buffer-limit (watchAnon reads it): a client's bulk
	// that cannot fit in it ends the client's connection, as Redis ends it, before it could
	// reach (and end) a shared upstream connection.
	queryBuf atomic.Int64
	order    orderGate
	// idx is what the index rules in force make of the proxy (SetIndexRules swaps it); a
	// client's batch runs under the one it loads at its start (client.ix).
	idx atomic.Pointer[indexSet]

	ctx      context.Context // canceled when the server has stopped; bounds upstream dials
	cancel   context.CancelFunc
	nextID   atomic.Uint64
	nclients atomic.Int64
	draining atomic.Bool
	forcing  atomic.Bool // the drain timed out: close without waiting
	// lastUnindexedLog (unix ns) keeps a stream of unindexed writes to a log line a second.
	lastUnindexedLog atomic.Int64
	lastReadonly     atomic.Int64 // unix ns of the last OnReadonly call

	mu      sync.Mutex
	clients map[*client]struct{}

	listening chan struct{}
	started   time.Time
	limits    atomic.Pointer[Limits] // what may change live (limits.go)
	addr      net.Addr               // the plain listener's (the TLS one's without it)
	tlsAddr   net.Addr
}

// New checks opts and builds a server; Run starts it.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Schema == nil {
		return nil, errors.New("proxy: invalid options: no index schema")
	}
	if opts.TLSListen != "" && opts.ClientTLS == nil {
		return nil, errors.New("proxy: invalid options: a TLS listener without a TLS configuration")
	}
	if opts.PoolSize < 1 || opts.MaxClients < 1 || opts.DialTimeout <= 0 || opts.ReadTimeout <= 0 {
		return nil, fmt.Errorf("proxy: invalid options: pool size %d, max clients %d, timeouts %v/%v",
			opts.PoolSize, opts.MaxClients, opts.DialTimeout, opts.ReadTimeout)
	}
	table := newCommandTable(connFamily, statefulFamily, sessionsFamily, scriptingFamily, infoFamily, proxyFamily)
	for _, name := range rewrite.PlannedCommands() {
		// A session write is planned by its keys: its row must say where they are.
		if sp := table.byName[name]; sp == nil || !sp.keys.any() {
			return nil, fmt.Errorf("proxy: command table: %s has a rewrite planner but no row with key positions", name)
		}
	}
	for _, sp := range table.specs {
		sp.plan = rewrite.PlanOf(sp.name)
	}
	deny, err := table.denyList(opts.DenyCommands, opts.RenameCommands)
	if err != nil {
		return nil, err
	}
	input := new(resp.Budget)
	m := newMetrics(opts.Registerer, table, input)
	ix := newIndexSet(opts.Schema, opts.Cluster != nil && opts.Cluster.Index != nil)
	base := identity{user: opts.Username, pass: opts.Password, auth: opts.Username != "" || opts.Password != ""}
	if base.user == "" {
		base.user = "default"
	}
	d := &dialer{base: base, tls: opts.TLS, dialTimeout: opts.DialTimeout, readTimeout: opts.ReadTimeout,
		log: opts.Logger}
	d.setup.Store(ix)
	if opts.Cluster != nil {
		if len(opts.Cluster.Seeds) == 0 || opts.Cluster.Fetch == nil {
			return nil, errors.New("proxy: invalid options: cluster mode without seeds")
		}
		opts.Upstream = opts.Cluster.Seeds[0] // the proxy's own one-off questions (AUTH checks...)
	}
	d.addr.Store(&opts.Upstream)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts: opts, log: opts.Logger, m: m, table: table, dialer: d,
		pools:     newPools(ctx, d, opts.PoolSize, m),
		defaultID: base, anonID: identity{user: "default"},
		ctx: ctx, cancel: cancel,
		clients:   make(map[*client]struct{}),
		listening: make(chan struct{}),
		started:   time.Now(),
		input:     input,
	}
	s.SetLimits(Limits{MaxClients: opts.MaxClients, MaxDedicated: opts.MaxDedicated, IdleTimeout: opts.IdleTimeout,
		CommandTimeout: opts.CommandTimeout, OutputBufferLimit: opts.OutputBufferLimit, InputMemoryLimit: opts.InputMemoryLimit})
	s.deny.Store(deny)
	s.idx.Store(ix)
	s.slow.threshold, s.slow.max = opts.SlowLogSlowerThan, max(opts.SlowLogMaxLen, 1)
	s.order.quiet.Store(true) // an idle proxy: OrderAuto's gate starts on
	// auto starts protected until Redis is seen asking for a password (watchProtected).
	s.clientPW.Store(&opts.ClientPassword)
	s.protected.Store(opts.Protected == "yes" || (opts.Protected != "no" && opts.ClientPassword == ""))
	s.anonOpen.Store(!base.creds()) // the proxy's own user needs no password: Redis is likely open
	if opts.Cluster != nil {
		s.cluster = &clusterState{opts: *opts.Cluster, reads: m.slotMaps, addr: &d.addr}
	}
	return s, nil
}

// Addr is the address the server listens on; it blocks until Run has bound it.
func (s *Server) Addr() net.Addr {
	<-s.listening
	return s.addr
}

// TLSAddr is the TLS listener's address (nil without one); it blocks until Run has bound it.
func (s *Server) TLSAddr() net.Addr {
	<-s.listening
	return s.tlsAddr
}

// Run serves clients until ctx is canceled, then drains: it stops accepting, lets batches in
// flight finish for up to ShutdownTimeout, and closes everything.
func (s *Server) Run(ctx context.Context) error {
	defer s.cancel()
	wl, err := s.listen()
	if err != nil {
		return err
	}
	if s.opts.Poll {
		p, err := resp.NewPoller()
		switch {
		case errors.Is(err, errors.ErrUnsupported): // not Linux: the default has no epoll here
			s.log.Info("client_reads: epoll is Linux-only; Go's netpoller it is")
		case err != nil:
			s.log.Warn("no epoll loop for client reads; Go's netpoller it is", "err", err)
		default:
			defer p.Close() // at Run's very end, when every client is gone
			wl.poller = p
		}
	}
	if s.opts.Ordering != OrderNone {
		s.order.probe = resp.NewProber()
		defer s.order.probe.Close()
		wl.probe = s.order.probe
	}
	close(s.listening)
	wl.start()
	srv := redcon.NewServerNetwork("tcp", s.opts.Listen, s.serveCommand, s.accept, s.closed)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(wl) }()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	s.pools.wg.Go(func() { s.pools.watchBusy(watchCtx) })
	s.pools.wg.Go(func() { s.watchAnon(watchCtx) })
	s.pools.wg.Go(func() { s.watchIdle(watchCtx) }) // a reload may set the timeout later
	if s.cluster != nil {
		if err := s.cluster.refresh(watchCtx, ""); err != nil {
			s.log.Error("cluster: no slot map yet; looking on", "err", err)
		}
		s.pools.wg.Go(func() { s.cluster.watch(watchCtx) })
	}
	if s.tlsAddr != nil {
		s.log.Info("listening", "addr", s.addr.String(), "tls", s.tlsAddr.String(), "upstream", s.Upstream())
	} else {
		s.log.Info("listening", "addr", s.addr.String(), "upstream", s.Upstream())
	}

	select {
	case err := <-served:
		stopWatch()
		wl.closing.Store(true)
		wl.Close()
		close(wl.stop) // the accept loops end
		s.pools.closeAll()
		return fmt.Errorf("proxy: serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "clients", s.nclients.Load(), "timeout", s.opts.ShutdownTimeout)
	s.draining.Store(true)
	wl.closing.Store(true)
	wl.Close()
	s.drain(s.opts.ShutdownTimeout)
	close(wl.stop) // now redcon's accept loop ends and closes any connection left
	<-served
	s.pools.closeAll()
	s.log.Info("stopped")
	return nil
}

// drain ends every client once its batch in flight is answered, for up to timeout.
func (s *Server) drain(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		for c := range s.clients {
			// A shared-path client is between batches or inside one: a read deadline ends it
			// right after its current batch. A dedicated one waits for its replies.
			if d := c.ded.Load(); d == nil || d.idle() || d.unpaired.Load() {
				_ = c.nc.SetReadDeadline(time.Now())
			}
		}
		n := len(s.clients)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.log.Warn("shutdown timeout: closing clients", "clients", n)
			s.forcing.Store(true)
			s.mu.Lock()
			for c := range s.clients {
				closeRaw(c.nc) // a TLS close could wait on a client that does not read
			}
			s.mu.Unlock()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *Server) accept(rc redcon.Conn) bool {
	if s.draining.Load() {
		return false
	}
	raw, secure := tlsRaw(rc.NetConn())
	if s.protected.Load() && !loopback(rc.NetConn().RemoteAddr()) && !(secure && s.opts.ClientTLSVerified) {
		s.m.rejected.WithLabelValues(rejectProtected).Inc()
		refuse(rc, raw, errDenied)
		return false
	}
	if s.nclients.Add(1) > int64(s.lim().MaxClients) {
		s.nclients.Add(-1)
		s.m.rejected.WithLabelValues(rejectMaxClients).Inc()
		refuse(rc, raw, "ERR max number of clients reached")
		return false
	}
	c := newClient(s, rc, s.nextID.Add(1))
	c.initInfo()
	if c.conn != nil {
		c.conn.Unauthenticated = c.unauthenticated
	}
	if c.conn != nil && s.opts.Ordering != OrderNone {
		c.conn.OnBatch = func(at int64) { s.order.arrived(c, at) }
		c.conn.OnPartial = c.handedOff // not a whole batch yet: hold nobody for it
	}
	rc.SetContext(c)
	s.mu.Lock()
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	s.m.clients.Inc()
	s.m.clientsTotal.Inc()
	return true
}

func (s *Server) closed(rc redcon.Conn, err error) {
	c, ok := rc.Context().(*client)
	if !ok {
		return
	}
	if tc, ok := asTLS(c.nc); ok && !tc.ConnectionState().HandshakeComplete {
		s.m.rejected.WithLabelValues(rejectTLS).Inc()
		s.log.Debug("client TLS handshake failed", "client", c.id, "err", err)
	}
	var pe *resp.ProtocolError
	if errors.Is(err, resp.ErrInputMemory) {
		s.m.disconnected.WithLabelValues(closeInputMemory).Inc()
		s.log.Warn("client disconnected: the incomplete commands of all clients hold more than clients.input_memory_limit",
			"client", c.id)
	} else if errors.As(err, &pe) {
		s.m.errors.WithLabelValues(errKindProtocol).Inc()
		s.log.Debug("client protocol error", "client", c.id, "err", pe.Msg)
	}
	c.handedOff()
	c.release()
	s.mu.Lock()
	delete(s.clients, c)
	s.mu.Unlock()
	s.nclients.Add(-1)
	s.m.clients.Dec()
}

// serveCommand is redcon's handler. redcon calls it per command, but the first call takes the
// whole pipeline that arrived with it, so the client's batch is handled as one unit:
// read batch -> route -> forward -> relay -> (redcon) flush.
func (s *Server) serveCommand(rc redcon.Conn, cmd redcon.Command) {
	c := rc.Context().(*client)
	if c.closing {
		return
	}
	if !c.state.CompareAndSwap(stateIdle, stateBatch) {
		return // ended by the idle timeout: its connection is closing
	}
	defer c.state.Store(stateIdle)
	defer s.survive(c)
	c.ix = s.idx.Load() // the index rules this batch runs under, whatever a reload does meanwhile
	c.batch = append(c.batch[:0], cmd)
	c.batch = append(c.batch, rc.ReadPipeline()...)
	if s.order.on(s.opts.Ordering) && c.conn != nil {
		if at := c.conn.Arrival(); at != 0 {
			s.order.enter(c, at)
		}
	}
	in := 0
	for _, cm := range c.batch {
		in += len(cm.Raw)
	}
	// The commands point into redcon's read buffer (third_party/redcon/PATCH.md): valid until
	// this call returns, so nothing of them is kept past the batch.
	c.run(c.batch)
	c.handedOff()
	c.noteBatch()
	c.forgetBatch()
	// Byte counters once per batch: a float counter's Add is a CAS loop, per command it showed.
	s.m.bytesIn.Add(float64(in))
	s.m.bytesOut.Add(float64(c.written))
	c.written = 0
}

// readonlyPrefix starts the error a replica answers writes with.
var readonlyPrefix = []byte("-READONLY ")

// upstreamReadonly reports a -READONLY reply to Options.OnReadonly, at most every 100 ms.
func (s *Server) upstreamReadonly() {
	if s.opts.OnReadonly == nil {
		return
	}
	now, last := time.Now().UnixNano(), s.lastReadonly.Load()
	if now-last >= int64(100*time.Millisecond) && s.lastReadonly.CompareAndSwap(last, now) {
		s.opts.OnReadonly()
	}
}

// Upstream is the Redis address new upstream connections go to; in cluster mode, the primaries.
func (s *Server) Upstream() string {
	if s.cluster != nil {
		if m := s.cluster.m.Load(); m != nil {
			return "cluster " + strings.Join(m.Primaries(), ",")
		}
		return "cluster (no slot map yet)"
	}
	return *s.dialer.addr.Load()
}

// SetUpstream points the proxy at another Redis: the new master after a Sentinel failover.
// Every upstream connection open now is closed, so the former master, gone or demoted, gets
// nothing more: commands in flight on shared connections are answered `-ERR upstream
// connection lost`, clients on dedicated connections (MULTI, subscribers, blocking commands)
// are disconnected as Redis disconnects them when it goes, and the pools dial addr on their
// next use. Connections dialed meanwhile to the former address are dropped when next used.
func (s *Server) SetUpstream(addr string) {
	if old := s.dialer.addr.Swap(&addr); *old == addr {
		return
	}
	s.dialer.gen.Add(1)
	s.pools.closeConns()
	s.mu.Lock()
	for c := range s.clients {
		if d := c.ded.Load(); d != nil {
			d.nc.Close()
		}
	}
	s.mu.Unlock()
	s.log.Warn("upstream changed: closed every upstream connection", "upstream", addr)
}

// survive turns a panic while handling a client's batch (a bug) into that client's
// disconnection, logged with its stack: one client's input never takes the process and every
// other client down.
func (s *Server) survive(c *client) {
	if r := recover(); r != nil {
		s.m.errors.WithLabelValues(errKindInternal).Inc()
		s.log.Error("internal error handling a client's commands; client disconnected", "client", c.id,
			"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		c.handedOff()
		c.close()
	}
}

// CheckUpstream reports whether Redis answers PING within the read timeout: the readiness probe.
func (s *Server) CheckUpstream(ctx context.Context) error {
	key := poolKey{}
	if s.cluster != nil { // ready: every slot has a primary, and one of them answers
		m := s.cluster.m.Load()
		switch {
		case m == nil:
			return errors.New("cluster: no slot map yet")
		case !m.Covered():
			return errors.New("cluster: not every slot has a primary")
		}
		key.node = m.Primaries()[0]
	}
	reply, err := s.dialer.oneShot(ctx, key, resp.AppendCommand(nil, "PING"), 1, nil)
	if err != nil {
		return err
	}
	if len(reply) > 0 && reply[0] == '-' {
		// NOAUTH still proves Redis is up; the proxy's own user may differ from default.
		if s.defaultID.creds() {
			return nil
		}
		return fmt.Errorf("upstream: %s", sanitizeLine(string(reply[1:len(reply)-2])))
	}
	return nil
}

// listen opens the client listeners (plain, TLS or both) behind one listener for redcon.
func (s *Server) listen() (*listener, error) {
	wl := &listener{lim: s.opts.Limits, queryBuf: &s.queryBuf, input: s.input, stamp: s.opts.Ordering != OrderNone,
		tlsConf: s.opts.ClientTLS, accepted: make(chan accepted), stop: make(chan struct{}), closer: newCloser()}
	if s.opts.Ordering == OrderAuto {
		wl.stampWhen = &s.order.quiet // under load the gate is off: plain reads, as without it
	}
	if s.opts.Listen != "" {
		ln, err := listenTCP(s.opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("proxy: listen: %w", err)
		}
		if wl.stamp {
			wl.stampInherited = resp.StampListener(ln)
		}
		wl.plain, s.addr = ln, ln.Addr()
	}
	if s.opts.TLSListen != "" {
		ln, err := listenTCP(s.opts.TLSListen)
		if err != nil {
			wl.Close()
			return nil, fmt.Errorf("proxy: listen (tls): %w", err)
		}
		wl.secure, s.tlsAddr = ln, ln.Addr()
		if s.addr == nil {
			s.addr = ln.Addr()
		}
	}
	if s.addr == nil {
		return nil, errors.New("proxy: no client listener (listen, tls listen)")
	}
	return wl, nil
}

// listener merges the client listeners, wraps accepted connections (TLS, then the protocol
// normalizer) and, once closing, holds Accept until the drain is over: redcon closes every
// connection as soon as Accept fails.
type listener struct {
	plain, secure  net.Listener // either may be nil
	tlsConf        *tls.Config
	accepted       chan accepted
	lim            resp.Limits
	queryBuf       *atomic.Int64 // Redis' client-query-buffer-limit as last read (0: unknown)
	input          *resp.Budget  // what large incomplete commands hold, all clients together
	stamp          bool          // plain reads keep receive times (Options.Ordering)
	stampWhen      *atomic.Bool  // ... only while this is true (nil: always)
	stampInherited bool          // the plain listener has the option on: accepted connections inherit it
	probe          *resp.Prober  // watches stamped connections for the order gate
	poller         *resp.Poller  // nil: reads wait on Go's netpoller (Options.Poll)
	closer         *closer       // closes the sockets of plain clients that have gone
	closing        atomic.Bool
	stop           chan struct{}
}

// accepted is a connection from one of the listeners, or the error that ended it.
type accepted struct {
	c      net.Conn
	secure bool
	err    error
}

// start accepts on each listener in a goroutine of its own.
func (l *listener) start() {
	go l.closer.run(l.stop)
	if l.plain != nil {
		go l.acceptLoop(l.plain, false)
	}
	if l.secure != nil {
		go l.acceptLoop(l.secure, true)
	}
}

func (l *listener) acceptLoop(ln net.Listener, secure bool) {
	y := netturn.New()
	defer y.Close()
	for n := 1; ; n++ {
		if n%acceptBatch == 0 {
			y.Wait()
		}
		c, err := ln.Accept()
		if err != nil && !l.closing.Load() && !errors.Is(err, net.ErrClosed) {
			// One failed accept (out of file descriptors, ENOBUFS, a connection reset before
			// it was taken) must not end the listener: wait a moment and go on.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		select {
		case l.accepted <- accepted{c, secure, err}:
		case <-l.stop:
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil {
			return
		}
	}
}

// acceptBatch is how many connections the accept loop takes between two turns of Go's network
// poller (netturn.Yield). In a storm of connections (10,000 at once) an accept loop that only
// yields to the run queue (runtime.Gosched, as before) keeps that queue from ever emptying, and
// the runtime then polls the network only from its monitor, every 10 ms and 128 events a time:
// an established client's PING, its bytes and then Redis' reply each waiting for such a poll,
// took up to 44-110 ms (p99). Waiting for the poller every 16 newcomers lets the clients already
// there be served in turn with them (p99 20-30 ms, the rest the host's; bench/README.md, "Fourth
// pass"); the newcomers wait in the kernel's backlog. Accepting otherwise keeps its pace: a
// connection that arrives while the proxy is idle wakes the poller at once
// (connection-per-request throughput unchanged).
const acceptBatch = 16

func (l *listener) Accept() (net.Conn, error) {
	var a accepted
	select {
	case a = <-l.accepted:
	case <-l.stop:
		return nil, net.ErrClosed
	}
	if a.err != nil {
		if l.closing.Load() {
			<-l.stop
			return nil, net.ErrClosed
		}
		return nil, a.err
	}
	c := a.c
	if a.secure {
		c = tls.Server(c, l.tlsConf) // the handshake runs on the client's first read
	}
	lim := l.lim
	if l.queryBuf != nil {
		lim.MaxQueryBuf = l.queryBuf.Load()
	}
	rc := resp.NewConn(c, lim)
	rc.SetBudget(l.input)
	if l.poller != nil && !a.secure {
		rc.Poll(l.poller)
	}
	if !a.secure { // (a TLS connection's close writes an alert: it stays with its goroutine)
		rc.SetDeferClose(l.closer.add)
	}
	if l.stamp && !a.secure {
		if l.stampInherited {
			rc.StampInherited()
		} else {
			rc.Stamp()
		}
		rc.StampWhen(l.stampWhen)
		l.probe.Add(rc)
	}
	return rc, nil
}

// Close closes the listeners (the accept loops then end).
func (l *listener) Close() error {
	for _, ln := range []net.Listener{l.plain, l.secure} {
		if ln != nil {
			ln.Close()
		}
	}
	return nil
}

// Addr is the plain listener's address (the TLS one's without it).
func (l *listener) Addr() net.Addr {
	if l.plain != nil {
		return l.plain.Addr()
	}
	return l.secure.Addr()
}

// tlsRaw is the TCP connection under a client connection from the TLS listener.
func tlsRaw(nc net.Conn) (net.Conn, bool) {
	if tc, ok := asTLS(nc); ok {
		return tc.NetConn(), true
	}
	return nil, false
}

// asTLS is the TLS connection inside a client connection from the TLS listener.
func asTLS(nc net.Conn) (*tls.Conn, bool) {
	if rc, ok := nc.(*resp.Conn); ok {
		tc, ok := rc.Conn.(*tls.Conn)
		return tc, ok
	}
	return nil, false
}

// refuse answers a connection accept turns away with msg, then redcon closes it. A TLS
// connection is closed without a word: the reply would first need the handshake, which waits
// for the client, and accept runs on the one goroutine that accepts for every listener.
func refuse(rc redcon.Conn, raw net.Conn, msg string) {
	if raw != nil {
		raw.Close()
		return
	}
	rc.WriteError(msg)
}

// indexSet is what the index rules make of the proxy: the schema, its scripts (and the
// commands that load them on a connection) and the ACL check of what they need.
type indexSet struct {
	schema   *rewrite.Schema
	scripts  *rewrite.Scripts
	acl      *aclCheck
	load     []byte           // SCRIPT LOAD of every script the proxy runs by SHA
	loadCmds []redcon.Command // the same, one command each (after a SCRIPT FLUSH)
}

func newIndexSet(sch *rewrite.Schema, clusterIndex bool) *indexSet {
	scripts := sch.Scripts()
	ix := &indexSet{schema: sch, scripts: scripts, acl: newACLCheck(sch.ACLProbe(scripts))}
	loaded := []*rewrite.Script{&scripts.Apply, &scripts.ApplyMany, &scripts.Sessions}
	if clusterIndex {
		loaded = []*rewrite.Script{&scripts.Cluster.Apply}
	}
	for _, sc := range loaded {
		start := len(ix.load)
		ix.load = resp.AppendCommand(ix.load, "SCRIPT", "LOAD", sc.Body)
		ix.loadCmds = append(ix.loadCmds, redcon.Command{Raw: ix.load[start:len(ix.load):len(ix.load)]})
	}
	return ix
}

// SetIndexRules puts a schema with other rules in force (index.rules, on a reload): each
// client's next batch runs under it, and new shared connections load its scripts (open ones
// load them at their first NOSCRIPT). The bookkeeping prefix must stay (a restart changes it),
// and cluster mode keeps its rules until a restart.
func (s *Server) SetIndexRules(sch *rewrite.Schema) error {
	cur := s.idx.Load()
	if s.cluster != nil {
		return errors.New("proxy: the index rules of a cluster change with a restart")
	}
	if sch.Prefix != cur.schema.Prefix {
		return errors.New("proxy: the index prefix changes with a restart")
	}
	ix := newIndexSet(sch, false)
	s.dialer.setup.Store(ix)
	s.idx.Store(ix)
	return nil
}
