package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// python is Debian's interpreter, the one python3-redis installs into (the first python3 on
// PATH may be another one).
const python = "/usr/bin/python3"

// TestRedisPy runs testdata/redispy_e2e.py (redis-py) against the proxy: basics and a pipeline,
// pub/sub order, BLPOP woken by LPUSH, WATCH with a conflicting writer (redis.WatchError) and
// two DBs.
func TestRedisPy(t *testing.T) {
	t.Parallel()
	if err := exec.Command(python, "-c", "import redis").Run(); err != nil {
		redistest.Missing(t, fmt.Sprintf("%s cannot import redis: %v", python, err))
	}
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr())

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "testdata/redispy_e2e.py", "127.0.0.1", portOf(t, p.Addr)).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("redispy_e2e.py did not finish within 60s:\n%s", out)
	}
	if err != nil {
		t.Fatalf("redispy_e2e.py: %v\n%s", err, out)
	}
	for _, check := range []string{"basic", "pubsub", "blpop", "watch", "two_dbs"} {
		if !strings.Contains(string(out), "ok "+check+"\n") {
			t.Errorf("check %s did not report ok:\n%s", check, out)
		}
	}
}
