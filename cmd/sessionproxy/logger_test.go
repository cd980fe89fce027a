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
