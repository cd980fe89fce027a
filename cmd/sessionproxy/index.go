package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/conf"
	"github.com/sessionproxy/sessionproxy/internal/sentinel"
	"github.com/sessionproxy/sessionproxy/reaper"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// schema turns the config's index rules into the rewrite schema.
func schema(cfg conf.Index) (*rewrite.Schema, error) {
	rules := make([]rewrite.Rule, len(cfg.Rules))
	for i, r := range cfg.Rules {
		rules[i] = rewrite.Rule{Name: r.Name, Pattern: r.Pattern, Field: r.Field, JSONPath: r.JSONPath,
			Layout: rewrite.Layout(r.Layout), IndexKey: r.IndexKey}
	}
	return rewrite.NewSchema(cfg.Prefix, rules)
}

// upstreams hands out one go-redis client per DB for the proxy's own non-passthrough work. In
// sentinel mode they are failover clients: they follow the master the sentinels name.
type upstreams struct {
	opts     redis.Options
	sentinel *conf.Upstream // nil: standalone
	mu       sync.Mutex
	byDB     map[int]*redis.Client
}

func newUpstreams(u conf.Upstream, tlsCfg *tls.Config) *upstreams {
	ups := &upstreams{byDB: map[int]*redis.Client{}, opts: redis.Options{
		Addr: u.Addr, Username: u.Username, Password: u.Password, TLSConfig: tlsCfg,
		DialTimeout: u.DialTimeout.D(), ReadTimeout: u.ReadTimeout.D(), WriteTimeout: u.ReadTimeout.D(),
		Protocol: 2, PoolSize: 4, DisableIdentity: true,
		// The reaper retries on its next tick: fail fast instead of stacking dial retries.
		MaxRetries: 1, DialerRetries: 1,
	}}
	if u.Mode == "sentinel" {
		ups.sentinel = &u
	}
	return ups
}

func (u *upstreams) db(n int) *redis.Client {
	u.mu.Lock()
	defer u.mu.Unlock()
	c := u.byDB[n]
	if c == nil {
		o := u.opts
		o.DB = n
		if s := u.sentinel; s != nil {
			c = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.Sentinel.Master,
				SentinelAddrs: s.Addrs, SentinelUsername: s.Sentinel.Username, SentinelPassword: s.Sentinel.Password,
				Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig, DB: n,
				DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
				Protocol: 2, PoolSize: o.PoolSize, DisableIdentity: true, MaxRetries: o.MaxRetries, DialerRetries: 1})
		} else {
			c = redis.NewClient(&o)
		}
		u.byDB[n] = c
	}
	return c
}

// cluster is a go-redis cluster client for the proxy's own work on a Redis Cluster (the index
// keeper): it routes by slot and follows redirects and failovers.
func (u *upstreams) cluster(seeds []string) *redis.ClusterClient {
	o := u.opts
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds, Username: o.Username, Password: o.Password,
		TLSConfig: o.TLSConfig, DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		Protocol: 2, PoolSize: o.PoolSize, DisableIdentity: true, MaxRedirects: 5})
}

// newWatcher builds the sentinel watcher of the data path; node holds the data nodes' options.
func newWatcher(u conf.Upstream, node redis.Options, tlsCfg *tls.Config, logger *slog.Logger,
	reg prometheus.Registerer, onSwitch func(addr string)) (*sentinel.Watcher, error) {
	return sentinel.New(sentinel.Options{Addrs: u.Addrs, Master: u.Sentinel.Master,
		Username: u.Sentinel.Username, Password: u.Sentinel.Password, Node: node, TLS: tlsCfg,
		OnSwitch: onSwitch, Logger: logger, Registerer: reg})
}

func (u *upstreams) Close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.byDB {
		_ = c.Close()
	}
}

// repairFunc is what the proxy runs for SESSIONS.REINDEX / SESSIONS.CHECK, under the rules the
// command runs under.
func repairFunc(ups *upstreams) func(ctx context.Context, sch *rewrite.Schema, db, rule int, fix bool) (rewrite.Report, error) {
	return func(ctx context.Context, sch *rewrite.Schema, db, rule int, fix bool) (rewrite.Report, error) {
		return reaper.NewRepairer(sch, reaper.DefaultBatch).Run(ctx, ups.db(db), rule, fix)
	}
}

// runRepairCommand is `sessionproxy reindex|check [flags]`: the same repair as the SESSIONS
// commands, straight against Redis, for operators.
func runRepairCommand(name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sessionproxy "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML config `file`")
	fs.String("upstream", "", "upstream Redis `addr`")
	db := fs.Int("db", 0, "Redis `DB` to work on")
	rule := fs.String("rule", "", "index rule `name` (default: every rule)")
	batch := fs.Int("batch", reaper.DefaultBatch, "keys per atomic step")
	force := fs.Bool("force", false, "run even if the running proxy keeps the index with other rules")
	allDBs := fs.Bool("all-dbs", false, "every DB Redis has (CONFIG GET databases) instead of -db")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sessionproxy %s: unexpected argument %q\n", name, fs.Arg(0))
		return 2
	}
	cfg, err := conf.Load(*configPath, os.LookupEnv, givenFlags(fs))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	sch, err := schema(cfg.Index)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	tlsCfg, err := upstreamTLS(cfg.Upstream)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	// go-redis' own lines (a failed dial it retries) into slog, as in the proxy: at debug
	// level, which this command does not print; its errors reach the report.
	redis.SetLogger(redisLog{slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	ups := newUpstreams(cfg.Upstream, tlsCfg)
	defer ups.Close()
	repair := func(ctx context.Context, db, r int, fix bool) (rewrite.Report, error) {
		rp := reaper.NewRepairer(sch, *batch)
		if isTerminal(stderr) {
			total, _ := ups.db(db).DBSize(ctx).Result()
			pr := &progress{w: stderr, what: fmt.Sprintf("%s db=%d rule=%s", name, db, sch.Rules[r].Name), total: total, start: time.Now()}
			rp.Progress = pr.update
			defer pr.done()
		}
		return rp.Run(ctx, ups.db(db), r, fix)
	}
	var clusterClient redis.Cmdable
	if cfg.Upstream.Mode == "cluster" {
		if !cfg.Index.Cluster {
			fmt.Fprintln(stderr, "cluster mode keeps no session index with index.cluster: false: nothing to "+name)
			return 2
		}
		cc := ups.cluster(cfg.Upstream.Addrs)
		defer cc.Close()
		clusterClient = cc
		keeper, err := reaper.NewCluster(reaper.ClusterOptions{Schema: sch, Client: cc, Batch: *batch})
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		// every primary; -db and -all-dbs do not apply (a cluster has DB 0 only)
		repair = func(ctx context.Context, _, r int, fix bool) (rewrite.Report, error) {
			return keeper.Repair(ctx, r, fix)
		}
	}
	dbs := []int{*db}
	if *allDBs && cfg.Upstream.Mode != "cluster" {
		n, err := databases(context.Background(), ups.db(0))
		if err != nil {
			fmt.Fprintf(stderr, "sessionproxy %s -all-dbs: %v\n", name, err)
			return 2
		}
		dbs = dbs[:0]
		for i := range n {
			dbs = append(dbs, i)
		}
	}
	fp := ups.db(0)
	if cfg.Upstream.Mode == "cluster" {
		fp = nil
	}
	if err := sameSchema(context.Background(), fp, clusterClient, sch); err != nil && !*force {
		fmt.Fprintf(stderr, "sessionproxy %s: %v\n", name, err)
		return 2
	}
	rules := []int{}
	if *rule != "" {
		r, ok := sch.RuleByName(*rule)
		if !ok {
			fmt.Fprintf(stderr, "unknown rule %q\n", *rule)
			return 2
		}
		rules = append(rules, r)
	} else {
		for i := range sch.Rules {
			rules = append(rules, i)
		}
	}
	code := 0
	for _, d := range dbs {
		for _, r := range rules {
			rep, err := repair(context.Background(), d, r, name == "reindex")
			if err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
			if *allDBs {
				fmt.Fprintf(stdout, "db=%d ", d)
			}
			f := rep.Fields()
			for i := 0; i < len(f); i += 2 {
				fmt.Fprintf(stdout, "%s=%v ", f[i], f[i+1])
			}
			fmt.Fprintln(stdout)
			if name == "check" && rep.Drift() {
				code = 3 // drift found: scripts can alert on it
			}
		}
	}
	return code
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress shows a repair's progress on one terminal line, redrawn at most twice a second:
// sessions scanned, the rate, and how long the rest of the DB would take at that rate (an
// upper bound: the DB's other keys are not sessions).
type progress struct {
	w     io.Writer
	what  string
	total int64 // keys in the DB (DBSIZE) when it started
	start time.Time
	last  time.Time
}

func (p *progress) update(scanned int) {
	now := time.Now()
	if now.Sub(p.last) < 500*time.Millisecond {
		return
	}
	p.last = now
	fmt.Fprint(p.w, "\r\x1b[K"+p.line(scanned, now.Sub(p.start)))
}

// line is the progress text after scanned sessions in elapsed.
func (p *progress) line(scanned int, elapsed time.Duration) string {
	rate := float64(scanned) / max(elapsed.Seconds(), 1e-3)
	s := fmt.Sprintf("%s: %d sessions scanned, %.0f/s", p.what, scanned, rate)
	if left := p.total - int64(scanned); p.total > 0 && left > 0 && rate > 0 {
		s += fmt.Sprintf(", %d keys in the DB, at most %v to go", p.total, (time.Duration(float64(left) / rate * float64(time.Second))).Round(time.Second))
	}
	return s
}

// done clears the progress line for the report.
func (p *progress) done() {
	if !p.last.IsZero() {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// databases is how many DBs Redis has (CONFIG GET databases).
func databases(ctx context.Context, c *redis.Client) (int, error) {
	v, err := c.ConfigGet(ctx, "databases").Result()
	if err != nil {
		return 0, fmt.Errorf("CONFIG GET databases: %w", err)
	}
	n, err := strconv.Atoi(v["databases"])
	if err != nil || n < 1 {
		return 0, fmt.Errorf("CONFIG GET databases: %q", v["databases"])
	}
	return n, nil
}

// redisLog routes go-redis' own log lines (pool dial failures...) into slog at debug level.
type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(_ context.Context, format string, v ...any) {
	r.l.Debug(fmt.Sprintf(format, v...), "component", "go-redis")
}

// sameSchema checks that the schema the running proxy stored at start (rewrite.FingerprintKey)
// is sch: a repair with other rules (run without the proxy's -config, say) would build a second
// index next to the one the proxy keeps. Nothing stored (no proxy has run, or an older one): no
// objection. The key is in DB 0 of db, or on the cluster.
func sameSchema(ctx context.Context, db *redis.Client, cluster redis.Cmdable, sch *rewrite.Schema) error {
	var c redis.Cmdable
	switch {
	case cluster != nil:
		c = cluster
	case db != nil:
		c = db
	default:
		return nil
	}
	stored, err := c.Get(ctx, sch.FingerprintKey()).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil
	case err != nil:
		return fmt.Errorf("reading the running proxy's schema (%s): %w", sch.FingerprintKey(), err)
	case stored != sch.Fingerprint():
		return fmt.Errorf("the running proxy keeps its index with other rules (schema %s, these rules %s): "+
			"give this command the proxy's -config, or -force to go on", stored, sch.Fingerprint())
	}
	return nil
}

// storeSchema records sch as the running proxy's schema (sameSchema). A failure is logged: the
// proxy runs without it, and repairs then cannot check.
func storeSchema(ctx context.Context, c redis.Cmdable, sch *rewrite.Schema, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Set(ctx, sch.FingerprintKey(), sch.Fingerprint(), 0).Err(); err != nil {
		logger.Warn("could not store the index schema's fingerprint; reindex/check cannot compare theirs", "key", sch.FingerprintKey(), "err", err)
	}
}
