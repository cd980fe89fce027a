// Package rulecheck validates the alert rules in deploy/prometheus with Prometheus' own rule
// parser (what `promtool check rules` runs): the YAML layout, every expression, every template.
// It is a module of its own so that the proxy's go.mod does not carry Prometheus' dependencies.
package rulecheck

import (
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func TestAlertRules(t *testing.T) {
	// As promtool check rules does (cmd/promtool/main.go: checkRules).
	groups, errs := rulefmt.ParseFile("../alerts.yaml", false, model.UTF8Validation,
		parser.NewParser(parser.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil || len(groups.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	n := 0
	for _, g := range groups.Groups {
		n += len(g.Rules)
	}
	t.Logf("%d groups, %d rules: ok", len(groups.Groups), n)
}
