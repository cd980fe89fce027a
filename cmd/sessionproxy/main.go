// Command sessionproxy runs the proxy: a Redis-protocol server that passes every command to an
// upstream Redis. See the README for flags, configuration and metrics.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/sessionproxy/sessionproxy/conf"
	"github.com/sessionproxy/sessionproxy/internal/cluster"
	"github.com/sessionproxy/sessionproxy/internal/nodes"
	"github.com/sessionproxy/sessionproxy/internal/resp"
	"github.com/sessionproxy/sessionproxy/internal/sentinel"
	"github.com/sessionproxy/sessionproxy/proxy"
	"github.com/sessionproxy/sessionproxy/reaper"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

func main() {
	keepSysmonAwake()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process exit, so it reads as one flow: flags -> config -> options -> serve.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "reindex" || args[0] == "check") {
		return runRepairCommand(args[0], args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "version" {
		if len(args) > 1 {
			fmt.Fprintf(stderr, "sessionproxy version: unexpected argument %q\n", args[1])
			return 2
		}
		readBuildInfo().print(stdout)
		return 0
	}
	fs := flag.NewFlagSet("sessionproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var (
		configPath   = fs.String("config", "", "YAML config `file` (env SESSIONPROXY_* and flags override it)")
		_            = fs.String("listen", "", "client listen `addr` (default 127.0.0.1:6380)")
		_            = fs.String("upstream", "", "upstream Redis `addr` (default 127.0.0.1:6379)")
		_            = fs.String("metrics", "", "metrics/health HTTP listen `addr` (default 127.0.0.1:9380; \"\" disables)")
		printDefault = fs.Bool("print-default-config", false, "print the commented default config and exit")
		checkConfig  = fs.String("check-config", "", "validate config `file` (with env and flags) and exit")
		version      = fs.Bool("version", false, "print version, commit and Go version and exit")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout) // asked for: the usage is the output, and not a failure
			fs.Usage()
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sessionproxy: unexpected argument %q (subcommands: reindex, check, version; -h for help)\n", fs.Arg(0))
		return 2
	}
	if *version {
		readBuildInfo().print(stdout)
		return 0
	}
	if *printDefault {
		_, _ = stdout.Write(conf.DefaultYAML())
		return 0
	}
	path := *configPath
	if *checkConfig != "" {
		path = *checkConfig
	}
	cfg, err := conf.Load(path, os.LookupEnv, givenFlags(fs))
	if err == nil {
		_, err = schema(cfg.Index) // the full rule check lives in rewrite
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if *checkConfig != "" {
		fmt.Fprintf(stdout, "%s: ok\n", *checkConfig)
		return 0
	}
	logger, level := newLogger(cfg, stderr)
	runtime.GOMAXPROCS(cfg.Procs)
	redis.SetLogger(redisLog{logger}) // process-wide in go-redis; main owns the process
	if err := serve(cfg, logger, &reloader{path: path, flags: givenFlags(fs), level: level, logger: logger}); err != nil {
		logger.Error("exiting", "err", err)
		return 1
	}
	return 0
}

// serve runs the proxy and the HTTP endpoint under one context until SIGINT/SIGTERM.
func serve(cfg conf.Config, logger *slog.Logger, rl *reloader) error {
	hup := make(chan os.Signal, 1) // SIGHUP reloads (onHangup); from here on it never ends the process
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	build := readBuildInfo()
	build.register(reg)
	rules := make([]string, len(cfg.Index.Rules))
	for i, r := range cfg.Index.Rules {
		rules[i] = r.Name + "=" + r.Pattern
	}
	logger.Info("sessionproxy starting", "version", build.version, "commit", build.commit, "go", build.goVersion,
		"listen", cfg.Listen, "metrics", cfg.Metrics, "rules", rules)
	opts, err := proxyOptions(cfg, logger, reg)
	if err != nil {
		return err
	}
	opts.Version, opts.Mode = build.version+" "+build.commit, cfg.Upstream.Mode
	clientCerts, err := clientTLS(cfg.Clients.TLS)
	if err != nil {
		return err
	}
	if clientCerts != nil {
		opts.TLSListen, opts.ClientTLS = cfg.Clients.TLS.Listen, clientCerts.Config()
		opts.ClientTLSVerified = cfg.Clients.TLS.AuthClients == "yes"
	}
	ups := newUpstreams(cfg.Upstream, opts.TLS)
	defer ups.Close()
	opts.Repair = repairFunc(ups)
	var srv *proxy.Server
	var watch *sentinel.Watcher
	if cfg.Upstream.Mode == "sentinel" {
		// The data path follows the master the sentinels name; the reaper's and repair's
		// go-redis clients do so through go-redis' failover client (newUpstreams).
		if watch, err = newWatcher(cfg.Upstream, ups.opts, opts.TLS, logger, reg, func(addr string) { srv.SetUpstream(addr) }); err != nil {
			return err
		}
		defer watch.Close()
		opts.OnReadonly = watch.Kick
		rctx, cancel := context.WithTimeout(context.Background(), cfg.Upstream.ReadTimeout.D())
		opts.Upstream, err = watch.Resolve(rctx)
		cancel()
		if err != nil { // start anyway: clients get "upstream unavailable" until a master is found
			logger.Error("no master yet; looking on", "err", err)
		}
	}
	var keeper interface{ Run(context.Context) error } // the reaper, or the cluster's index keeper
	if cfg.Upstream.Mode == "cluster" {
		nodeClients := nodes.New(ups.opts) // CLUSTER SLOTS every 5 s: one connection per node, kept
		defer nodeClients.Close()
		opts.Cluster = &proxy.ClusterOptions{Seeds: cfg.Upstream.Addrs,
			Fetch: func(ctx context.Context, addr string) ([]cluster.Range, error) {
				return cluster.FetchWith(ctx, nodeClients.Get(addr))
			}}
		opts.Repair = func(context.Context, *rewrite.Schema, int, int, bool) (rewrite.Report, error) {
			return rewrite.Report{}, errors.New("the cluster index is off (index.cluster: false)")
		}
		if cfg.Index.Cluster {
			cc := ups.cluster(cfg.Upstream.Addrs)
			defer cc.Close()
			idx, err := reaper.NewCluster(reaper.ClusterOptions{Schema: opts.Schema, Client: cc, Interval: cfg.Reaper.Interval.D(),
				Batch: cfg.Reaper.Batch, Notifications: cfg.Reaper.Notifications, Logger: logger, Registerer: reg})
			if err != nil {
				return err
			}
			opts.Cluster.Index, keeper = idx, idx
			storeSchema(context.Background(), cc, opts.Schema, logger)
			opts.Repair = func(ctx context.Context, _ *rewrite.Schema, _, rule int, fix bool) (rewrite.Report, error) {
				return idx.Repair(ctx, rule, fix)
			}
			logger.Warn("cluster mode: the cluster session index is experimental (README \"Guarantees on Redis Cluster\")")
		} else {
			logger.Warn("cluster mode: commands are routed by slot; the session index is off (index.cluster: false): session writes pass through unindexed")
		}
	} else {
		rp, err := reaper.New(reaper.Options{Schema: opts.Schema, DB: ups.db, Interval: cfg.Reaper.Interval.D(),
			Batch: cfg.Reaper.Batch, Notifications: cfg.Reaper.Notifications, Logger: logger, Registerer: reg})
		if err != nil {
			return err
		}
		keeper = rp
		storeSchema(context.Background(), ups.db(0), opts.Schema, logger) // for reindex/check to compare
		opts.InfoExtra = func() []string { return reaperInfo(rp.Status()) }
		// New index rules on a reload: the proxy's next batches, the reaper (which rebuilds
		// every DB's index under them), SESSIONS.CHECK/REINDEX and the stored fingerprint.
		rl.setReaper = rp.SetTiming
		rl.setRules = func(sch *rewrite.Schema) error {
			if err := srv.SetIndexRules(sch); err != nil {
				return err
			}
			if err := rp.SetSchema(sch); err != nil {
				return err
			}
			storeSchema(context.Background(), ups.db(0), sch, logger)
			return nil
		}
	}
	opts.Reload, opts.ConfigGet = rl.reload, rl.configGet
	if srv, err = proxy.New(opts); err != nil {
		return err
	}
	rl.srv, rl.certs, rl.cur = srv, clientCerts, cfg // before anything can ask for a reload
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	if keeper != nil {
		g.Go(func() error { return keeper.Run(ctx) })
	}
	if watch != nil {
		g.Go(func() error { return watch.Run(ctx) })
	}
	if clientCerts != nil {
		g.Go(func() error {
			clientCerts.Watch(ctx, cfg.Clients.TLS.Reload.D(), reportTLS(logger, cfg.Clients.TLS))
			return nil
		})
	}
	g.Go(func() error { return onHangup(ctx, hup, rl) })
	g.Go(func() error { return watchFile(ctx, rl, cfg.ConfigWatch.D()) })
	if cfg.Metrics != "" {
		g.Go(func() error {
			return serveHTTP(ctx, "metrics", cfg.Metrics, metricsMux(reg, srv, cfg.Upstream.ReadTimeout.D()))
		})
	}
	if cfg.Admin != "" {
		g.Go(func() error { return serveHTTP(ctx, "admin", cfg.Admin, adminMux()) })
	}
	return g.Wait()
}

// proxyOptions is the one place where the config becomes package options.
func proxyOptions(cfg conf.Config, logger *slog.Logger, reg prometheus.Registerer) (proxy.Options, error) {
	tlsCfg, err := upstreamTLS(cfg.Upstream)
	if err != nil {
		return proxy.Options{}, err
	}
	sch, err := schema(cfg.Index)
	if err != nil {
		return proxy.Options{}, err
	}
	return proxy.Options{
		Schema:            sch,
		Listen:            cfg.Listen,
		Upstream:          cfg.Upstream.Addr,
		Username:          cfg.Upstream.Username,
		Password:          cfg.Upstream.Password,
		ClientPassword:    cfg.Clients.Password,
		Protected:         cfg.Clients.ProtectedMode,
		TLS:               tlsCfg,
		DialTimeout:       cfg.Upstream.DialTimeout.D(),
		ReadTimeout:       cfg.Upstream.ReadTimeout.D(),
		PoolSize:          cfg.Upstream.PoolSize,
		MaxClients:        cfg.Limits.MaxClients,
		MaxDedicated:      cfg.Limits.MaxDedicated,
		IdleTimeout:       cfg.Clients.Timeout.D(),
		DenyCommands:      cfg.Clients.DenyCommands,
		RenameCommands:    cfg.Clients.Renames,
		OutputBufferLimit: int64(cfg.Clients.OutputLimit),
		InputMemoryLimit:  int64(cfg.Clients.InputMemory),
		SlowLogSlowerThan: cfg.SlowLog.SlowerThan.D(),
		SlowLogMaxLen:     cfg.SlowLog.MaxLen,
		CommandTimeout:    cfg.Upstream.CommandTimeout.D(),
		Limits: resp.Limits{
			MaxBulkLen:      int64(cfg.Limits.MaxBulkLen),
			MaxMultibulkLen: int64(cfg.Limits.MaxMultibulkLen),
			MaxInlineLen:    int(cfg.Limits.MaxInlineLen),
		},
		ShutdownTimeout: cfg.ShutdownTimeout.D(),
		Ordering:        ordering(cfg.Ordering),
		Poll:            cfg.ClientReads == "epoll",
		Logger:          logger,
		Registerer:      reg,
	}, nil
}

// ordering maps the config's ordering (validated) to the proxy's.
func ordering(s string) proxy.Ordering {
	switch s {
	case "arrival":
		return proxy.OrderArrival
	case "auto":
		return proxy.OrderAuto
	}
	return proxy.OrderNone
}

func upstreamTLS(u conf.Upstream) (*tls.Config, error) {
	if !u.TLS.Enabled {
		return nil, nil
	}
	c := &tls.Config{ServerName: u.TLS.ServerName, InsecureSkipVerify: u.TLS.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // opt-in by config
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(u.Addr)
		if err != nil {
			return nil, fmt.Errorf("upstream.addr: %w", err)
		}
		c.ServerName = host
	}
	if u.TLS.CAFile != "" {
		pem, err := os.ReadFile(u.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls.ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream.tls.ca_file: no certificates in %s", u.TLS.CAFile)
		}
	}
	if u.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(u.TLS.CertFile, u.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream.tls: client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// metricsMux serves /metrics, /healthz (the process is up) and /readyz (Redis answers).
func metricsMux(reg *prometheus.Registry, srv *proxy.Server, probeTimeout time.Duration) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		pctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
		defer cancel()
		if err := srv.CheckUpstream(pctx); err != nil {
			http.Error(w, fmt.Sprintf("%v (upstream %s)", err, srv.Upstream()), http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintf(w, "ok\nupstream %s\n", srv.Upstream())
	})
	return mux
}

// adminMux serves the profiles (how speed work is measured) on the admin listener only: they
// show memory and command contents, so they are never on the metrics listener.
func adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serveHTTP serves mux on addr until ctx ends; name ("metrics", "admin") labels its errors.
func serveHTTP(ctx context.Context, name, addr string, mux *http.ServeMux) error {
	hs := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s listen: %w", name, err)
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// reaperInfo is the reaper's lines in INFO's # Proxy section.
func reaperInfo(st reaper.Status) []string {
	last := int64(-1) // no sweep yet
	if !st.LastSweep.IsZero() {
		last = int64(time.Since(st.LastSweep).Seconds())
	}
	return []string{
		"reaper_leading:" + strconv.Itoa(boolInt(st.Leading)),
		"reaper_notifications:" + strconv.Itoa(st.Notifications),
		"reaper_ledger_entries:" + strconv.FormatInt(st.LedgerEntries, 10),
		"reaper_last_sweep_seconds_ago:" + strconv.FormatInt(last, 10),
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// readableDurations writes durations as text ("1.5s"), as the text handler does, where the
// JSON handler would write nanoseconds.
func readableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// newLogger is the process's logger; its level can change on a reload.
func newLogger(cfg conf.Config, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated by conf
	lv := new(slog.LevelVar)
	lv.Set(level)
	hopts := &slog.HandlerOptions{Level: lv}
	if cfg.LogFormat == "json" {
		hopts.ReplaceAttr = readableDurations
		return slog.New(slog.NewJSONHandler(w, hopts)), lv
	}
	return slog.New(slog.NewTextHandler(w, hopts)), lv
}

// givenFlags is the config overrides among fs's flags: only those given on the command line,
// so that one given empty (-metrics "") still overrides.
func givenFlags(fs *flag.FlagSet) conf.Flags {
	var f conf.Flags
	fs.Visit(func(fl *flag.Flag) {
		v := fl.Value.String()
		switch fl.Name {
		case "listen":
			f.Listen = &v
		case "upstream":
			f.Upstream = &v
		case "metrics":
			f.Metrics = &v
		}
	})
	return f
}
