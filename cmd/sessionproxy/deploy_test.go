package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestDeployMetricNames: every sessionproxy metric the deployment material (alert rules, the
// Grafana dashboard) names
// is one the binary exports, so a rename cannot leave an alert that never fires.
func TestDeployMetricNames(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up.Addr())
	exported := map[string]bool{}
	// Labelled families appear with their first sample: the reaper's ledger gauge after its
	// first sweep.
	waitFor(10*time.Second, func() bool {
		for sample := range scrapeMetrics(t, p.HTTP) {
			name, _, _ := strings.Cut(sample, "{")
			exported[name] = true
		}
		return exported["sessionproxy_reaper_ledger_entries"]
	})
	for _, file := range []string{"../../deploy/prometheus/alerts.yaml", "../../deploy/grafana/sessionproxy.json"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range regexp.MustCompile(`sessionproxy_[a-z_]+`).FindAllString(string(b), -1) {
			if !exported[name] && !exported[name+"_total"] {
				t.Errorf("%s names %s, which the proxy does not export", file, name)
			}
		}
	}
}
