package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"os"

	"github.com/sessionproxy/sessionproxy/conf"
	"github.com/sessionproxy/sessionproxy/internal/tlsfiles"
)

// clientTLS loads the client TLS listener's files (nil without a listener), with Redis'
// defaults carried over: the protocols of tls-protocols, and tls-auth-clients' meaning.
func clientTLS(t conf.ClientTLS) (*tlsfiles.Reloader, error) {
	if t.Listen == "" {
		return nil, nil
	}
	lo, hi, err := conf.TLSVersions(t.Protocols)
	if err != nil {
		return nil, err
	}
	base := &tls.Config{MinVersion: lo, MaxVersion: hi}
	switch t.AuthClients {
	case "yes":
		base.ClientAuth = tls.RequireAndVerifyClientCert
	case "optional":
		base.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tlsfiles.New(tlsfiles.Files{Cert: t.CertFile, Key: t.KeyFile, CA: t.CAFile}, base)
}

// reportTLS logs a load of the client TLS files, or why they did not load.
func reportTLS(logger *slog.Logger, t conf.ClientTLS) func(bool, error) {
	return func(loaded bool, err error) {
		if err != nil {
			logger.Error("client TLS: files not loaded; the previous certificate stays in use", "err", err)
		} else if loaded {
			logger.Info("client TLS: certificate files loaded", "cert", t.CertFile, "ca", t.CAFile)
		}
	}
}

// onHangup handles SIGHUP (delivered on hup) until ctx ends: the client TLS files (if any)
// are loaded again. The rest of the configuration needs a restart for now (README "Client
// access"). serve keeps hup registered until the process is done, so a SIGHUP during the
// shutdown drain does not end it either.
func onHangup(ctx context.Context, hup <-chan os.Signal, certs *tlsfiles.Reloader, t conf.ClientTLS, logger *slog.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		if certs == nil {
			logger.Warn("SIGHUP: nothing to reload (no clients.tls); other settings need a restart")
			continue
		}
		logger.Info("SIGHUP: loading the client TLS files again; other settings need a restart")
		reportTLS(logger, t)(certs.Reload(true))
	}
}
