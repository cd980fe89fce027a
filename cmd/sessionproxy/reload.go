package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sessionproxy/sessionproxy/conf"
	"github.com/sessionproxy/sessionproxy/internal/tlsfiles"
	"github.com/sessionproxy/sessionproxy/proxy"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// reloader re-reads the configuration (the file, the environment and the flags, as at start)
// and puts what may change live in force (conf.Reloadable): log level, idle and command
// timeouts, output buffer limit, client and dedicated-connection bounds, and the client TLS
// files. A file that does not load or validate, or that changes a setting that needs a restart,
// changes nothing: the error gives every reason.
type reloader struct {
	path  string
	flags conf.Flags
	level *slog.LevelVar
	srv   *proxy.Server
	// setRules puts new index rules in force, setReaper the reaper's interval and batch; nil
	// in cluster mode, where they need a restart.
	setRules  func(*rewrite.Schema) error
	setReaper func(interval time.Duration, batch int)
	certs     *tlsfiles.Reloader
	logger    *slog.Logger

	mu  sync.Mutex
	cur conf.Config
}

// reload is SIGHUP's and PROXY RELOAD's: it returns what changed ("nothing" if nothing did).
func (r *reloader) reload() (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := conf.Load(r.path, os.LookupEnv, r.flags)
	var sch *rewrite.Schema
	if err == nil {
		sch, err = schema(next.Index)
	}
	if err != nil {
		return "", err
	}
	changed := conf.Changed(r.cur, next)
	var fixed []string
	newRules := false
	for _, p := range changed {
		switch {
		case p == "index.rules" && r.setRules != nil:
			newRules = true
		case (p == "reaper.interval" || p == "reaper.batch") && r.setReaper != nil:
		case !conf.Reloadable[p]:
			fixed = append(fixed, p)
		}
	}
	if len(fixed) > 0 {
		return "", fmt.Errorf("these settings need a restart: %s (nothing was changed)", strings.Join(fixed, ", "))
	}
	// What can still fail goes first, so that a failure changes nothing: the deny list (an
	// unknown command name), then the client TLS files (swapped only once all of them load).
	if err := r.srv.CheckDenyCommands(next.Clients.DenyCommands, next.Clients.Renames); err != nil {
		return "", err
	}
	if r.certs != nil {
		if _, err := r.certs.Reload(true); err != nil {
			return "", fmt.Errorf("client TLS files: %w (nothing was changed)", err)
		}
	}
	if r.setReaper != nil { // first: new rules' repairs take the new batch
		r.setReaper(next.Reaper.Interval.D(), next.Reaper.Batch)
	}
	if newRules {
		if err := r.setRules(sch); err != nil {
			return "", fmt.Errorf("index rules: %w", err)
		}
	}
	_ = r.srv.SetDenyCommands(next.Clients.DenyCommands, next.Clients.Renames) // checked above
	r.srv.SetClientPassword(next.Clients.Password)
	var level slog.Level
	_ = level.UnmarshalText([]byte(next.LogLevel)) // validated by conf
	r.level.Set(level)
	r.srv.SetLimits(limitsOf(next))
	r.cur = next
	if len(changed) == 0 {
		return "nothing", nil
	}
	return strings.Join(changed, ", "), nil
}

// limitsOf is the proxy's live limits from a configuration.
func limitsOf(c conf.Config) proxy.Limits {
	return proxy.Limits{MaxClients: c.Limits.MaxClients, MaxDedicated: c.Limits.MaxDedicated,
		IdleTimeout: c.Clients.Timeout.D(), CommandTimeout: c.Upstream.CommandTimeout.D(),
		OutputBufferLimit: int64(c.Clients.OutputLimit), InputMemoryLimit: int64(c.Clients.InputMemory)}
}

// onHangup reloads the configuration on SIGHUP (delivered on hup) until ctx ends, and logs
// the outcome. serve keeps hup registered until the process is done, so a SIGHUP during the
// shutdown drain does not end it either.
func onHangup(ctx context.Context, hup <-chan os.Signal, r *reloader) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		if changed, err := r.reload(); err != nil {
			r.logger.Error("SIGHUP: config not reloaded; the running one stays", "err", err)
		} else {
			r.logger.Info("SIGHUP: config reloaded", "changed", changed)
		}
	}
}

// watchFile reloads the configuration when its file changes, checking every interval, until
// ctx ends (a Kubernetes ConfigMap volume swaps the file in under a symlink). A change that
// does not reload is logged once, until the file changes again.
func watchFile(ctx context.Context, r *reloader, every time.Duration) error {
	if r.path == "" || every <= 0 {
		return nil
	}
	last := fileStamp(r.path)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		st := fileStamp(r.path)
		if st == last {
			continue
		}
		last = st
		if changed, err := r.reload(); err != nil {
			r.logger.Error("config file changed: not reloaded; the running one stays", "err", err)
		} else {
			r.logger.Info("config file changed: reloaded", "changed", changed)
		}
	}
}

// fileStamp identifies a version of the file at p: where its symlinks lead, its size and time.
func fileStamp(p string) string {
	st, err := os.Stat(p)
	if err != nil {
		return "missing"
	}
	real, _ := filepath.EvalSymlinks(p)
	return fmt.Sprintf("%s;%d;%d", real, st.Size(), st.ModTime().UnixNano())
}

// configGet is PROXY CONFIG GET: the running configuration's settings whose YAML path matches
// pattern (a glob, any case, as Redis' CONFIG GET).
func (r *reloader) configGet(pattern string) [][2]string {
	r.mu.Lock()
	cur := r.cur
	r.mu.Unlock()
	var out [][2]string
	for _, s := range conf.Settings(cur) {
		if ok, _ := path.Match(strings.ToLower(pattern), strings.ToLower(s.Path)); ok {
			out = append(out, [2]string{s.Path, s.Value})
		}
	}
	return out
}
