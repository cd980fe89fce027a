package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestReload: PROXY RELOAD and SIGHUP re-read the config file. A change to a live setting
// takes effect for clients already connected (max_clients, the idle timeout); a change to one
// that needs a restart, or a file that does not validate, is refused with every reason and
// changes nothing; no client connection is dropped by a reload.
func TestReload(t *testing.T) {
	up := redistest.Start(t)
	path := filepath.Join(t.TempDir(), "sessionproxy.yaml")
	write := func(yaml string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("limits:\n  max_clients: 100\n")
	p := startProxyArgs(t, up.Addr(), []string{"-config", path})
	admin := dialRESP(t, p.Addr)
	if got := admin.do("PROXY", "RELOAD"); got != "$26\r\nreloaded; changed: nothing\r\n" {
		t.Fatalf("an unchanged file: %q", got)
	}

	// Live: max_clients down to 2 (the admin connection is one of them), an idle timeout.
	write("limits:\n  max_clients: 2\nclients:\n  timeout: 1s\nlog_level: debug\n")
	if got := admin.do("PROXY", "RELOAD"); !strings.Contains(got, "changed: log_level, clients.timeout, limits.max_clients") {
		t.Fatalf("a live change: %q", got)
	}
	second := dialRESP(t, p.Addr)
	second.do("PING")
	third := dialRESP(t, p.Addr)
	third.send(encode("PING"))
	if got, _ := third.reply(2 * time.Second); got != "-ERR max number of clients reached\r\n" {
		t.Errorf("a third client past the reloaded max_clients: %q", got)
	}
	second.expectClosed(4 * time.Second) // the reloaded idle timeout applies to it

	// Needs a restart: refused, nothing changes (the idle timeout stays 1s).
	write("limits:\n  max_clients: 100\nclients:\n  timeout: 0s\nordering: none\nindex:\n  prefix: \"other:\"\n")
	admin = dialRESP(t, p.Addr)
	if got := admin.do("PROXY", "RELOAD"); !strings.HasPrefix(got, "-ERR config not reloaded: these settings need a restart: ordering, index.prefix") {
		t.Errorf("a change that needs a restart: %q", got)
	}
	write("limits:\n  max_clients: 0\nlog_level: loud\n")
	if got := admin.do("PROXY", "RELOAD"); !strings.Contains(got, "limits.max_clients") || !strings.Contains(got, "log_level") {
		t.Errorf("an invalid file: %q", got)
	}

	// SIGHUP does the same, and logs it.
	write("limits:\n  max_clients: 100\nclients:\n  timeout: 0s\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return strings.Contains(p.stderr.String(), "SIGHUP: config reloaded") }) {
		t.Fatalf("no reload logged after SIGHUP:\n%s", p.stderr.String())
	}
	time.Sleep(2500 * time.Millisecond)
	if got := admin.do("PING"); got != "+PONG\r\n" {
		t.Errorf("an idle client after the timeout was reloaded away: %q", got)
	}
	// PROXY CONFIG GET shows the running settings (the reloaded ones), secrets only as set.
	got := admin.do("PROXY", "CONFIG", "GET", "limits.max_c*")
	if got != "*2\r\n$18\r\nlimits.max_clients\r\n$3\r\n100\r\n" {
		t.Errorf("PROXY CONFIG GET limits.max_c*: %q", got)
	}
	if got := admin.do("PROXY", "CONFIG", "GET", "clients.password"); got != "*2\r\n$16\r\nclients.password\r\n$0\r\n\r\n" {
		t.Errorf("PROXY CONFIG GET clients.password (unset): %q", got)
	}
	for _, want := range []string{"# Proxy\r\n", "upstream_state:up\r\n", "reaper_leading:1\r\n", "reaper_notifications:1\r\n",
		"reaper_ledger_entries:"} {
		if got := admin.do("PROXY", "INFO"); !strings.Contains(got, want) {
			t.Errorf("PROXY INFO lacks %q: %q", want, got)
		}
	}

	// clients.password changes live, as CONFIG SET requirepass: connected clients stay in, new
	// ones must give it; taken away, nobody is asked for it any more.
	write("limits:\n  max_clients: 100\nclients:\n  password: rotated\n")
	if got := admin.do("PROXY", "RELOAD"); !strings.Contains(got, "changed: clients.password") {
		t.Fatalf("a password reload: %q", got)
	}
	if got := admin.do("PING"); got != "+PONG\r\n" {
		t.Errorf("a client connected before the password: %q", got)
	}
	late := dialRESP(t, p.Addr)
	if got := late.do("PING"); !strings.HasPrefix(got, "-NOAUTH") {
		t.Errorf("a new client without the password: %q", got)
	}
	if got := late.do("AUTH", "wrong"); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Errorf("a wrong password: %q", got)
	}
	waiting := dialRESP(t, p.Addr) // connected while the password is asked; never gives it
	if got := late.do("AUTH", "rotated"); got != "+OK\r\n" {
		t.Errorf("the new password: %q", got)
	}
	write("limits:\n  max_clients: 100\n")
	if got := admin.do("PROXY", "RELOAD"); !strings.Contains(got, "changed: clients.password") {
		t.Fatalf("the password taken away: %q", got)
	}
	if got := waiting.do("PING"); got != "+PONG\r\n" {
		t.Errorf("a client that never gave the password, after it was taken away: %q", got)
	}
	if got := dialRESP(t, p.Addr).do("PING"); got != "+PONG\r\n" {
		t.Errorf("a new client after the password was taken away: %q", got)
	}

	// The reaper's interval and batch change live too.
	write("limits:\n  max_clients: 100\nreaper:\n  interval: 200ms\n  batch: 64\n")
	if got := admin.do("PROXY", "RELOAD"); !strings.Contains(got, "changed: reaper.interval, reaper.batch") {
		t.Errorf("a reaper reload: %q", got)
	}
	if got := admin.do("PROXY", "CONFIG", "GET", "reaper.interval"); !strings.Contains(got, "200ms") {
		t.Errorf("PROXY CONFIG GET reaper.interval: %q", got)
	}
}

// TestReloadUnderLoad: with redis-benchmark running through the proxy, the config file is
// changed four times and the proxy reloads it on its own (config_watch): a new deny list is in
// force for the next command, new index rules index new writes at once and older sessions
// after the rebuild the reload starts, a file with an unknown command name and one that changes a
// setting needing a restart are refused with the reason logged and change nothing, and the
// benchmark sees no error and no dropped connection.
func TestReloadUnderLoad(t *testing.T) {
	redistest.Need(t, "redis-benchmark")
	up := redistest.Start(t)
	path := filepath.Join(t.TempDir(), "sessionproxy.yaml")
	write := func(yaml string) {
		t.Helper()
		// Written aside and renamed in, as a ConfigMap volume swaps its files.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte("config_watch: 100ms\n"+yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("clients:\n  deny_commands: []\n")
	p := startProxyArgs(t, up.Addr(), []string{"-config", path})
	port := portOf(t, p.Addr)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bench := exec.CommandContext(ctx, "redis-benchmark", "-h", "127.0.0.1", "-p", port,
		"-t", "set,get,incr", "-c", "20", "-P", "4", "-n", "300000", "-q")
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := bench.CombinedOutput()
		done <- result{out, err}
	}()
	time.Sleep(300 * time.Millisecond) // the benchmark's connections are up

	c := dialRESP(t, p.Addr)
	if got := c.do("FLUSHALL"); got != "+OK\r\n" {
		t.Fatalf("FLUSHALL before the reload: %q", got)
	}
	write("clients:\n  deny_commands: [FLUSHALL]\n")
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(p.stderr.String(), `config file changed: reloaded" changed=clients.deny_commands`)
	}) {
		t.Fatalf("no reload logged:\n%s", p.stderr.String())
	}
	if got := c.do("FLUSHALL"); !strings.HasPrefix(got, "-ERR unknown command 'FLUSHALL (denied by the proxy") {
		t.Errorf("FLUSHALL after the reload, on a connection open before it: %q", got)
	}

	// New index rules: a connect-redis rule next to the default one. A session written straight
	// to Redis before is indexed by the rebuild the reload starts; one written through the proxy
	// after it is indexed by its own write.
	if _, err := up.Do("SET", "sess:before", `{"passport":{"user":"42"}}`); err != nil {
		t.Fatal(err)
	}
	write("clients:\n  deny_commands: [FLUSHALL]\nindex:\n  rules:\n" +
		"    - {name: session, pattern: \"session:*\", field: userid}\n" +
		"    - {name: express, pattern: \"sess:*\", json_path: passport.user, index_key: \"web:{uid}\"}\n")
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(p.stderr.String(), `config file changed: reloaded" changed=index.rules`)
	}) {
		t.Fatalf("no rules reload logged:\n%s", p.stderr.String())
	}
	if got := c.do("SET", "sess:after", `{"passport":{"user":"42"}}`); got != "+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	if !waitFor(10*time.Second, func() bool {
		return c.do("SESSIONS.LIST", "42", "express") == "*2\r\n$5\r\nafter\r\n$6\r\nbefore\r\n"
	}) {
		t.Errorf("SESSIONS.LIST 42 express after the rules reload: %q", c.do("SESSIONS.LIST", "42", "express"))
	}
	if got := c.do("PROXY", "INFO"); !strings.Contains(got, "index_rules:session=session:*,express=sess:*\r\n") {
		t.Errorf("INFO PROXY after the rules reload: %q", got)
	}

	write("clients:\n  deny_commands: [FLUSHALL, NOSUCHCMD]\nlog_level: debug\n")
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(p.stderr.String(), `NOSUCHCMD`) && strings.Contains(p.stderr.String(), "not reloaded")
	}) {
		t.Fatalf("the broken file's refusal was not logged:\n%s", p.stderr.String())
	}
	write("clients:\n  deny_commands: []\nordering: none\n")
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(p.stderr.String(), "these settings need a restart: ordering")
	}) {
		t.Fatalf("the restart-only change's refusal was not logged:\n%s", p.stderr.String())
	}
	if got := c.do("FLUSHALL"); !strings.HasPrefix(got, "-ERR unknown command 'FLUSHALL (denied") {
		t.Errorf("FLUSHALL after two refused reloads: %q (the last good deny list must stay)", got)
	}
	if got := c.do("PROXY", "CONFIG", "GET", "log_level"); !strings.Contains(got, "info") {
		t.Errorf("log_level after a refused reload: %q", got)
	}

	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("redis-benchmark did not finish")
	}
	if r.err != nil {
		t.Fatalf("redis-benchmark: %v\n%s", r.err, clip(string(r.out)))
	}
	checkBenchmark(t, string(r.out), "SET", "GET", "INCR")
	if got := c.do("GET", "counter:__rand_int__"); got != "$6\r\n300000\r\n" {
		t.Errorf("counter after 300000 INCRs through reloads: %q", got)
	}
}
