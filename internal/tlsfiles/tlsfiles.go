package tlsfiles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Files names the PEM files of a TLS server: its certificate chain and key, and the CAs that
// sign the client certificates it accepts ("" when it asks for none).
type Files struct {
	Cert, Key, CA string
}

// Reloader holds the configuration built from Files, and builds it again when they change.
type Reloader struct {
	files Files
	base  *tls.Config
	cur   atomic.Pointer[tls.Config]

	mu    sync.Mutex // one load at a time
	stamp string     // the files' sizes and times at the last load attempt
}

// New loads files into a copy of base (its certificates and client CAs are replaced).
func New(files Files, base *tls.Config) (*Reloader, error) {
	r := &Reloader{files: files, base: base.Clone()}
	if _, err := r.Reload(true); err != nil {
		return nil, err
	}
	return r, nil
}

// Config is the configuration to serve with: every handshake takes the latest files loaded.
func (r *Reloader) Config() *tls.Config {
	return &tls.Config{
		MinVersion: r.base.MinVersion, // checked by linters; the per-handshake config decides
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.cur.Load(), nil
		},
	}
}

// Reload loads the files again when they changed since the last attempt (always with force),
// and reports whether a new configuration is in use. On error the previous one stays.
func (r *Reloader) Reload(force bool) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamp := r.files.stamp()
	if !force && stamp == r.stamp {
		return false, nil
	}
	r.stamp = stamp
	cfg, err := r.files.load(r.base)
	if err != nil {
		return false, err
	}
	r.cur.Store(cfg)
	return true, nil
}

// Watch reloads the files every interval while ctx lasts, and reports each load or failure.
func (r *Reloader) Watch(ctx context.Context, every time.Duration, report func(loaded bool, err error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if loaded, err := r.Reload(false); loaded || err != nil {
			report(loaded, err)
		}
	}
}

// stamp sums up the files' sizes and modification times: a change of either is a new file.
func (f Files) stamp() string {
	var b strings.Builder
	for _, name := range []string{f.Cert, f.Key, f.CA} {
		if name == "" {
			continue
		}
		if st, err := os.Stat(name); err == nil {
			fmt.Fprintf(&b, "%d/%d;", st.Size(), st.ModTime().UnixNano())
		} else {
			b.WriteString("missing;")
		}
	}
	return b.String()
}

func (f Files) load(base *tls.Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s, key %s: %w", f.Cert, f.Key, err)
	}
	cfg := base.Clone()
	cfg.Certificates = []tls.Certificate{cert}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("tls: client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("tls: client CA file " + f.CA + ": no PEM certificate in it")
		}
		cfg.ClientCAs = pool
	}
	return cfg, nil
}
