package sentinel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/nodes"
)

// Options configure a Watcher.
type Options struct {
	Addrs              []string // the sentinels, host:port
	Master             string   // name of the monitored master
	Username, Password string   // the sentinels' own AUTH ("" password: none)
	// Node is what the data nodes need (AUTH, TLS, timeouts): the ROLE check uses it. Its Addr
	// and DB are ignored.
	Node redis.Options
	// TLS, if set, is used for the sentinels too.
	TLS *tls.Config
	// OnSwitch runs, on the Run goroutine, with the new master's address when it changes.
	OnSwitch   func(addr string)
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics not exported
}

// Poll is how often Run asks the sentinels without a +switch-master message.
const Poll = time.Second

// Watcher finds and follows the master.
type Watcher struct {
	o        Options
	log      *slog.Logger
	sentinel []*redis.SentinelClient
	addr     atomic.Pointer[string]
	kick     chan struct{}

	master    *prometheus.GaugeVec
	failovers prometheus.Counter
	mu        sync.Mutex     // guards shown
	shown     string         // the master label set to 1
	nodes     *nodes.Clients // asked for their ROLE, every poll
}

// New builds a watcher; Resolve finds the master, Run follows it.
func New(o Options) (*Watcher, error) {
	if len(o.Addrs) == 0 || o.Master == "" {
		return nil, errors.New("sentinel: no sentinels or no master name")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{o: o, log: o.Logger, kick: make(chan struct{}, 1), nodes: nodes.New(o.Node),
		master: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sessionproxy_upstream_master",
			Help: "1 for the master the proxy forwards to (sentinel mode), by address."}, []string{"addr"}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "sessionproxy_upstream_failovers_total",
			Help: "Master changes the proxy followed (sentinel mode)."}),
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(w.master); err != nil {
			return nil, fmt.Errorf("sentinel: metrics: %w", err)
		}
		if err := o.Registerer.Register(w.failovers); err != nil {
			return nil, fmt.Errorf("sentinel: metrics: %w", err)
		}
	}
	for _, a := range o.Addrs {
		w.sentinel = append(w.sentinel, redis.NewSentinelClient(&redis.Options{Addr: a,
			Username: o.Username, Password: o.Password, TLSConfig: o.TLS, Protocol: 2, DisableIdentity: true,
			DialTimeout: o.Node.DialTimeout, ReadTimeout: o.Node.ReadTimeout, WriteTimeout: o.Node.ReadTimeout,
			PoolSize: 2, MaxRetries: -1}))
	}
	return w, nil
}

// Addr is the master's address as last found ("" before Resolve succeeded).
func (w *Watcher) Addr() string {
	if p := w.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// Kick makes Run look up the master at once (e.g. the master answered -READONLY: it has been
// demoted, and the message saying so may not have come).
func (w *Watcher) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Close closes the connections to the sentinels.
func (w *Watcher) Close() {
	for _, sc := range w.sentinel {
		_ = sc.Close()
	}
	w.nodes.Close()
}

// Resolve asks the sentinels for the master until one names a node that is a master, trying
// again every 100 ms until ctx ends.
func (w *Watcher) Resolve(ctx context.Context) (string, error) {
	for {
		addr, err := w.lookup(ctx)
		if err == nil {
			w.set(addr, false)
			return addr, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("sentinel: master %q: %w", w.o.Master, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// lookup asks each sentinel in turn; the first answer that names a node that is a master now
// (per ROLE) wins.
func (w *Watcher) lookup(ctx context.Context) (string, error) {
	var errs []error
	for i, sc := range w.sentinel {
		qctx, cancel := context.WithTimeout(ctx, w.o.Node.ReadTimeout)
		hp, err := sc.GetMasterAddrByName(qctx, w.o.Master).Result()
		cancel()
		if err != nil || len(hp) != 2 {
			errs = append(errs, fmt.Errorf("sentinel %s: %w", w.o.Addrs[i], cmpErr(err, "no answer")))
			continue
		}
		addr := net.JoinHostPort(hp[0], hp[1])
		// The current master too: a sentinel that has not heard of a failover yet (or is cut
		// off from the others) still names the demoted one, and the next sentinel may know.
		if err := w.isMaster(ctx, addr); err != nil {
			errs = append(errs, fmt.Errorf("sentinel %s names %s: %w", w.o.Addrs[i], addr, err))
			continue
		}
		return addr, nil
	}
	return "", errors.Join(errs...)
}

func cmpErr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}

// isMaster asks the node at addr for its ROLE.
func (w *Watcher) isMaster(ctx context.Context, addr string) error {
	qctx, cancel := context.WithTimeout(ctx, w.o.Node.ReadTimeout)
	defer cancel()
	role, err := w.nodes.Get(addr).Do(qctx, "ROLE").Slice()
	if err != nil {
		return err
	}
	if len(role) == 0 || role[0] != "master" {
		return fmt.Errorf("it is not a master (ROLE %v)", role)
	}
	return nil
}

// set records addr as the master; switched says it replaces another one.
func (w *Watcher) set(addr string, switched bool) {
	w.addr.Store(&addr)
	w.mu.Lock()
	if w.shown != "" {
		w.master.DeleteLabelValues(w.shown)
	}
	w.shown = addr
	w.master.WithLabelValues(addr).Set(1)
	w.mu.Unlock()
	if switched {
		w.failovers.Inc()
	}
}

// Run follows the master until ctx ends. Call after Resolve.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for i, sc := range w.sentinel {
		wg.Go(func() { w.listen(ctx, w.o.Addrs[i], sc) })
	}
	t := time.NewTicker(Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-w.kick:
		}
		addr, err := w.lookup(ctx)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("sentinel: no master found", "master", w.o.Master, "err", err)
			}
			continue
		}
		if old := w.Addr(); addr != old {
			w.log.Warn("sentinel: master changed", "master", w.o.Master, "from", old, "to", addr)
			w.set(addr, true)
			if w.o.OnSwitch != nil {
				w.o.OnSwitch(addr)
			}
		}
	}
}

// listen relays one sentinel's +switch-master messages for our master as kicks. go-redis
// resubscribes by itself after a lost connection.
func (w *Watcher) listen(ctx context.Context, addr string, sc *redis.SentinelClient) {
	sub := sc.Subscribe(ctx, "+switch-master")
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			// "<master name> <old ip> <old port> <new ip> <new port>"
			if name, _, _ := strings.Cut(m.Payload, " "); name == w.o.Master {
				w.log.Info("sentinel: +switch-master", "sentinel", addr, "msg", m.Payload)
				w.Kick()
			}
		}
	}
}
