package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// runTool runs a redis tool (redis-cli, redis-benchmark) with stdin, bounded by timeout, and
// returns its combined output; a non-zero exit or a timeout fails the test.
func runTool(t *testing.T, timeout time.Duration, stdin []byte, name string, args ...string) string {
	t.Helper()
	redistest.Need(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %q: no exit within %v; output:\n%s", name, args, timeout, clip(string(out)))
	}
	if err != nil {
		t.Fatalf("%s %q: %v; output:\n%s", name, args, err, clip(string(out)))
	}
	return string(out)
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func TestRedisCLI(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr())
	port := portOf(t, p.Addr)
	cli := func(t *testing.T, stdin []byte, args ...string) string {
		t.Helper()
		return strings.TrimSpace(runTool(t, 20*time.Second, stdin, "redis-cli",
			append([]string{"-h", "127.0.0.1", "-p", port}, args...)...))
	}

	t.Run("set_get", func(t *testing.T) {
		if got := cli(t, nil, "set", "cli:k", "v"); got != "OK" {
			t.Fatalf("set: %q", got)
		}
		if got := cli(t, nil, "get", "cli:k"); got != "v" {
			t.Fatalf("get: %q", got)
		}
		if got, _ := srv.Do("GET", "cli:k"); got != "$1" {
			t.Fatalf("redis-server GET header: %q, want $1", got)
		}
	})

	// Introspection through redis-cli: INFO is Redis' with the proxy's section after it; INFO
	// proxy and PROXY INFO that section alone; CLIENT LIST the proxy's own clients.
	t.Run("introspection", func(t *testing.T) {
		info := cli(t, nil, "INFO")
		if !strings.Contains(info, "# Server") || !strings.Contains(info, "# Proxy") ||
			!strings.Contains(info, "sessionproxy_version:") || !strings.Contains(info, "reaper_leading:") {
			t.Errorf("INFO: %q", clip(info))
		}
		for _, args := range [][]string{{"INFO", "proxy"}, {"PROXY", "INFO"}} {
			got := cli(t, nil, args...)
			if !strings.HasPrefix(got, "# Proxy") || strings.Contains(got, "# Server") || !strings.Contains(got, "upstream_state:up") {
				t.Errorf("%v: %q", args, clip(got))
			}
		}
		list := cli(t, nil, "CLIENT", "LIST")
		if lines := strings.Split(list, "\n"); len(lines) != 1 || !strings.Contains(list, "cmd=client|list") {
			t.Errorf("CLIENT LIST: want this redis-cli alone (the proxy's clients, not its upstream connections): %q", list)
		}
	})

	t.Run("select_db", func(t *testing.T) {
		if got := cli(t, nil, "-n", "2", "set", "cli:db", "two"); got != "OK" {
			t.Fatalf("set in db 2: %q", got)
		}
		if got := cli(t, nil, "set", "cli:db", "zero"); got != "OK" {
			t.Fatalf("set in db 0: %q", got)
		}
		if got := cli(t, nil, "-n", "2", "get", "cli:db"); got != "two" {
			t.Fatalf("get in db 2: %q", got)
		}
		if got := cli(t, nil, "get", "cli:db"); got != "zero" {
			t.Fatalf("get in db 0: %q", got)
		}
		if got := cli(t, nil, "-n", "2", "dbsize"); got != "1" {
			t.Fatalf("dbsize in db 2: %q", got)
		}
	})

	t.Run("stdin_ping", func(t *testing.T) {
		if got := cli(t, []byte("PING\n")); got != "PONG" {
			t.Fatalf("PING from stdin: %q", got)
		}
		if got := cli(t, []byte("PING\nECHO hello\n")); got != "PONG\nhello" {
			t.Fatalf("two commands from stdin: %q", got)
		}
	})

	t.Run("raw_inline", func(t *testing.T) {
		c := dialRESP(t, p.Addr)
		c.send([]byte("PING\r\nSET cli:inline \"a b\"\r\nGET cli:inline\r\n"))
		for _, want := range []string{"+PONG\r\n", "+OK\r\n", "$3\r\na b\r\n"} {
			if got, err := c.reply(5 * time.Second); err != nil || got != want {
				t.Fatalf("inline reply %q, %v; want %q", got, err, want)
			}
		}
	})

	t.Run("pipe_10000", func(t *testing.T) {
		const n = 10000
		var in []byte
		for i := range n {
			in = append(in, encode("SET", fmt.Sprintf("pipe:%d", i), fmt.Sprintf("val:%d", i))...)
		}
		out := cli(t, in, "--pipe")
		if !strings.Contains(out, fmt.Sprintf("errors: 0, replies: %d", n)) {
			t.Fatalf("--pipe summary missing or wrong:\n%s", out)
		}
		if got := cli(t, nil, "get", "pipe:9999"); got != "val:9999" {
			t.Fatalf("get pipe:9999 = %q", got)
		}
		got, err := srv.Do("EVAL", "return #redis.call('keys', 'pipe:*')", "0")
		if err != nil || got != fmt.Sprintf(":%d", n) {
			t.Fatalf("keys pipe:* on redis-server: %q, %v", got, err)
		}
	})
}

// TestRedisCLIAuth runs redis-cli with and without passwords against a redis-server with
// --requirepass, straight and through the proxy: the output and exit status must be the same.
func TestRedisCLIAuth(t *testing.T) {
	t.Parallel()
	redistest.Need(t, "redis-cli")
	const password = "cli-secret"
	srv := redistest.Start(t, "--requirepass", password)
	p := startProxy(t, srv.Addr())
	tests := []struct {
		name string
		args []string
		want string // in the output
	}{
		{"right_password", []string{"-a", password, "set", "auth:k", "v"}, "OK"},
		{"right_password_get", []string{"-a", password, "get", "auth:k"}, "v"},
		{"acl_user", []string{"--user", "default", "--pass", password, "-n", "2", "set", "auth:k", "two"}, "OK"},
		{"acl_user_get", []string{"--user", "default", "--pass", password, "-n", "2", "get", "auth:k"}, "two"},
		{"wrong_password", []string{"-a", "wrong", "get", "auth:k"}, "WRONGPASS"},
		{"no_password", []string{"get", "auth:k"}, "NOAUTH"},
		{"auth_in_stdin", []string{"-a", password, "-n", "0"}, "v"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdin []byte
			if tc.name == "auth_in_stdin" {
				stdin = []byte("AUTH wrong\nAUTH " + password + "\nGET auth:k\n")
			}
			var outs [2]string
			var codes [2]int
			for i, addr := range []string{srv.Addr(), p.Addr} {
				args := append([]string{"-h", "127.0.0.1", "-p", portOf(t, addr), "--no-auth-warning"}, tc.args...)
				outs[i], codes[i] = runToolStatus(t, 20*time.Second, stdin, "redis-cli", args...)
			}
			if outs[0] != outs[1] || codes[0] != codes[1] {
				t.Errorf("redis-cli %q differs:\nredis-server (exit %d): %q\nproxy (exit %d):        %q",
					tc.args, codes[0], outs[0], codes[1], outs[1])
			}
			if !strings.Contains(outs[1], tc.want) {
				t.Errorf("through the proxy: %q, want it to contain %q", outs[1], tc.want)
			}
		})
	}
}

// runToolStatus is runTool for commands that may exit non-zero: it returns the output and the
// exit status.
func runToolStatus(t *testing.T, timeout time.Duration, stdin []byte, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %q: no exit within %v; output:\n%s", name, args, timeout, clip(string(out)))
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s %q: %v", name, args, err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// benchLine is a redis-benchmark -q result line, e.g. "SET: 294117.62 requests per second, p50=1.679 msec".
var benchLine = regexp.MustCompile(`^([A-Z]+(?: \(10 keys\))?): [0-9.]+ requests per second`)

// checkBenchmark parses redis-benchmark -q output: every wanted test has a result line, and no
// error appears anywhere.
func checkBenchmark(t *testing.T, out string, want ...string) {
	t.Helper()
	got := map[string]bool{}
	// -q rewrites a progress line with '\r' before it prints the result.
	for _, line := range strings.FieldsFunc(out, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if m := benchLine.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			got[m[1]] = true
		}
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("no result line for %s", w)
		}
	}
	for _, bad := range []string{"ERR", "Error", "error"} {
		if strings.Contains(out, bad) {
			t.Errorf("output contains %q", bad)
		}
	}
	if t.Failed() {
		t.Logf("redis-benchmark output:\n%s", clip(strings.ReplaceAll(out, "\r", "\n")))
	}
}

func TestRedisBenchmark(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	p := startProxy(t, srv.Addr())
	port := portOf(t, p.Addr)

	t.Run("pipelined", func(t *testing.T) {
		out := runTool(t, 60*time.Second, nil, "redis-benchmark", "-h", "127.0.0.1", "-p", port,
			"-t", "set,get,incr,lpush,hset,mset", "-P", "16", "-n", "20000", "-q")
		checkBenchmark(t, out, "SET", "GET", "INCR", "LPUSH", "HSET", "MSET (10 keys)")
	})
	t.Run("50_clients", func(t *testing.T) {
		out := runTool(t, 60*time.Second, nil, "redis-benchmark", "-h", "127.0.0.1", "-p", port,
			"-t", "set,get", "-c", "50", "-P", "1", "-n", "5000", "-q")
		checkBenchmark(t, out, "SET", "GET")
	})
	// The counter the benchmark drove is exact: a lost or doubled INCR would show.
	if got, err := srv.Do("GET", "counter:__rand_int__"); err != nil || got != "$5" {
		t.Errorf("counter after 20000 INCRs: reply header %q, %v (want a 5-digit value)", got, err)
	}
	if c := dialRESP(t, p.Addr); c.do("GET", "counter:__rand_int__") != "$5\r\n20000\r\n" {
		t.Errorf("counter:__rand_int__ != 20000 through the proxy")
	}
}
