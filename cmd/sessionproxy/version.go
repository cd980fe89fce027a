package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// commitStamp is the commit when the build stamps it with -ldflags "-X main.commitStamp=..."
// (make build, the Dockerfile): Go's own VCS stamp is off where GOFLAGS has -buildvcs=false, and
// a Docker build has no .git.
var commitStamp string

// buildInfo is what the binary knows of its build: the module version ("(devel)" for a build
// from a checkout), the commit (with "-dirty" when the tree had changes) and the Go version.
type buildInfo struct{ version, commit, goVersion string }

func readBuildInfo() buildInfo {
	b := buildInfo{version: "(devel)", commit: "unknown", goVersion: runtime.Version()}
	if commitStamp != "" {
		b.commit = commitStamp
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if v := info.Main.Version; v != "" {
		b.version = v
	}
	dirty := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.commit = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty {
		b.commit += "-dirty"
	}
	return b
}

func (b buildInfo) print(w io.Writer) {
	fmt.Fprintf(w, "sessionproxy %s (commit %s, %s)\n", b.version, b.commit, b.goVersion)
}

// register exports the build as sessionproxy_build_info{version,commit,goversion} 1.
func (b buildInfo) register(reg prometheus.Registerer) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "sessionproxy", Name: "build_info",
		Help: "The running build: always 1, with its version, commit and Go version as labels."},
		[]string{"version", "commit", "goversion"})
	g.WithLabelValues(b.version, b.commit, b.goVersion).Set(1)
	reg.MustRegister(g)
}

// usage is -h: how to call the binary, its subcommands, then its flags.
const usage = `Usage:
  sessionproxy [flags]                 run the proxy
  sessionproxy reindex|check [flags]   rebuild or verify the session index (-h for their flags)
  sessionproxy version                 print version, commit and Go version

Flags:
`
