package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestGoRedis runs the go-redis v9 client tests in testdata/goredis (a module of its own, so
// the main module does not depend on go-redis) against two proxies: one in front of a plain
// redis-server and one in front of a redis-server with --requirepass. Each test there runs
// with Protocol 2 and Protocol 3 clients: basics, a pipeline of 1000, TxPipelined, WATCH with
// a conflicting writer (redis.TxFailedErr), pub/sub order, BLPOP woken by LPUSH, two DBs, AUTH.
func TestGoRedis(t *testing.T) {
	t.Parallel()
	const password = "e2e-secret"
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr())
	authSrv := redistest.Start(t, "--requirepass", password)
	ap := startProxy(t, authSrv.Addr())

	ctx, cancel := context.WithTimeout(context.Background(), 75*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool(), "test", "-count=1", "-v", ".")
	cmd.Dir = "testdata/goredis"
	cmd.Env = append(proxyEnv(),
		"GOWORK=off",
		"GOREDIS_E2E_ADDR="+p.Addr,
		"GOREDIS_E2E_AUTH_ADDR="+ap.Addr,
		"GOREDIS_E2E_PASSWORD="+password,
	)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("go test testdata/goredis did not finish within 75s:\n%s", out)
	}
	if err != nil {
		t.Fatalf("go-redis tests failed: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Errorf("go-redis tests skipped:\n%s", out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--- ") {
			t.Log(strings.TrimSpace(line))
		}
	}
	if !p.alive() || !ap.alive() {
		t.Error("a proxy exited during the go-redis tests")
	}
}
