package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/conf"
)

// TestJSONLogDurations: the JSON log writes durations as the text log does ("1.5s"), not as
// nanoseconds.
func TestJSONLogDurations(t *testing.T) {
	cfg := conf.Default()
	cfg.LogFormat = "json"
	var b bytes.Buffer
	logger, _ := newLogger(cfg, &b)
	logger.Info("shutting down", "timeout", 1500*time.Millisecond)
	if !strings.Contains(b.String(), `"timeout":"1.5s"`) {
		t.Errorf("JSON log line: %s", b.String())
	}
}

// TestProgressLine: what reindex/check show on a terminal while they run, and that the line is
// cleared for the report.
func TestProgressLine(t *testing.T) {
	p := &progress{what: "reindex db=0 rule=session", total: 100000}
	if got, want := p.line(20000, 2*time.Second), "reindex db=0 rule=session: 20000 sessions scanned, 10000/s, 100000 keys in the DB, at most 8s to go"; got != want {
		t.Errorf("line:\n got %q\nwant %q", got, want)
	}
	if got := p.line(100000, time.Second); strings.Contains(got, "to go") {
		t.Errorf("line at the end: %q", got)
	}
	var b bytes.Buffer
	p = &progress{w: &b, what: "check", start: time.Now().Add(-10 * time.Second)}
	p.update(50)
	p.update(60) // within half a second: not drawn
	p.done()
	if got := b.String(); got != "\r\x1b[Kcheck: 50 sessions scanned, 5/s\r\x1b[K" {
		t.Errorf("terminal output %q", got)
	}
}
