package main

import (
	"crypto/tls"
	"log/slog"

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
