// Package promtest reads metrics back from a Prometheus registry, for tests that assert on what
// the proxy and the reaper export.
package promtest

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Sum gathers g and adds up the samples of the metric family name whose labels include every
// "key=value" in want: counter and gauge values, and for histograms the sample counts (value)
// and the sample sums (histSum). A family that does not exist sums to 0.
func Sum(g prometheus.Gatherer, name string, want ...string) (value, histSum float64, err error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, 0, fmt.Errorf("gather: %w", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, w := range want {
				k, v, _ := strings.Cut(w, "=")
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == k && l.GetValue() == v
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				value += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				value += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				value += float64(m.GetHistogram().GetSampleCount())
				histSum += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return value, histSum, nil
}
