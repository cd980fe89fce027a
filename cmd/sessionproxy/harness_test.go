package main

// End-to-end harness: the tests in this package drive the real sessionproxy binary, built once
// by TestMain, in front of real redis-server processes (internal/redistest), with real clients
// (redis-cli, redis-benchmark, go-redis, redis-py) and raw RESP over TCP. Everything listens on
// 127.0.0.1 only.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/resp"
	"github.com/sessionproxy/sessionproxy/internal/syncbuf"
)

// binPath is the sessionproxy binary TestMain built.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sessionproxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "sessionproxy")
	args := []string{"build", "-o", binPath}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command(goTool(), append(args, ".")...)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build sessionproxy: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// goTool is the go command of the toolchain running the tests (go test puts its own bin
// directory first on PATH).
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// proxyProc is one running sessionproxy process owned by a test.
type proxyProc struct {
	t    testing.TB
	Addr string // client listener, 127.0.0.1:port
	HTTP string // metrics/health listener, 127.0.0.1:port

	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	exited chan struct{} // closed once the process has exited; then state is set
	state  *os.ProcessState

	stopOnce sync.Once
	code     int
	elapsed  time.Duration
}

// stopTimeout bounds how long a SIGTERM'd proxy may take to exit.
const stopTimeout = 10 * time.Second

// startProxy runs the binary on free loopback ports in front of upstream, with env
// ("SESSIONPROXY_X=y") on top of a clean environment, waits until it serves, and stops it with
// SIGTERM when the test ends, failing the test unless it exits 0 within stopTimeout.
func startProxy(t testing.TB, upstream string, env ...string) *proxyProc {
	t.Helper()
	return startProxyArgs(t, upstream, nil, env...)
}

// startProxyArgs is startProxy with more command-line arguments (e.g. -config FILE).
func startProxyArgs(t testing.TB, upstream string, args []string, env ...string) *proxyProc {
	t.Helper()
	p := &proxyProc{
		t:      t,
		Addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(redistest.FreePort(t))),
		HTTP:   net.JoinHostPort("127.0.0.1", strconv.Itoa(redistest.FreePort(t))),
		stderr: &syncbuf.Buffer{},
		exited: make(chan struct{}),
	}
	p.cmd = exec.Command(binPath, append([]string{"-listen", p.Addr, "-metrics", p.HTTP, "-upstream", upstream}, args...)...)
	p.cmd.Env = proxyEnv(env...)
	p.cmd.Stderr = p.stderr
	p.cmd.Stdout = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start sessionproxy: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		code, elapsed := p.stop()
		switch {
		case code == -1:
			t.Errorf("sessionproxy did not exit within %v of SIGTERM (killed)", stopTimeout)
		case code != 0:
			t.Errorf("sessionproxy exited %d after SIGTERM (%v)", code, elapsed.Round(time.Millisecond))
		}
		p.checkLog()
		if t.Failed() {
			t.Logf("sessionproxy stderr:\n%s", p.stderr.String())
		}
	})
	p.waitReady()
	return p
}

// proxyEnv is the process environment without any SESSIONPROXY_* from outside, a short drain
// bound (tests close their clients first; a leftover blocked client must not stall cleanup),
// then env.
func proxyEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SESSIONPROXY_") {
			out = append(out, kv)
		}
	}
	out = append(out, "SESSIONPROXY_SHUTDOWN_TIMEOUT=5s")
	if v := os.Getenv("SESSIONPROXY_TEST_CLIENT_READS"); v != "" {
		out = append(out, "SESSIONPROXY_CLIENT_READS="+v) // CI runs the tests once per way (Makefile)
	}
	if raceEnabled && os.Getenv("GORACE") == "" {
		// The race runtime sleeps 1s at exit by default; every stop would pay it.
		out = append(out, "GORACE=atexit_sleep_ms=50")
	}
	return append(out, env...)
}

// waitReady waits for the "listening" log line and a 200 from /healthz. It does not open a
// client connection, so tests that count connections start from zero.
func (p *proxyProc) waitReady() {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.exited:
			p.t.Fatalf("sessionproxy exited during startup (%v):\n%s", p.state, p.stderr.String())
		default:
		}
		if strings.Contains(p.stderr.String(), "msg=listening addr="+p.Addr) {
			if code, _, err := httpGet(p.HTTP, "/healthz"); err == nil && code == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("sessionproxy not ready after 10s:\n%s", p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM once and waits for the exit: it returns the exit code (-1 if the process
// had to be killed after stopTimeout) and how long the exit took.
func (p *proxyProc) stop() (int, time.Duration) {
	p.stopOnce.Do(func() {
		start := time.Now()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			p.code = p.state.ExitCode()
		case <-time.After(stopTimeout):
			_ = p.cmd.Process.Kill()
			<-p.exited
			p.code = -1
		}
		p.elapsed = time.Since(start)
	})
	return p.code, p.elapsed
}

// kill ends the process with SIGKILL, a crash; the test's cleanup expects nothing more of it.
func (p *proxyProc) kill() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
}

// alive reports whether the process is still running.
func (p *proxyProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// checkLog fails the test on a data race report or a panic in the proxy's output.
func (p *proxyProc) checkLog() {
	p.t.Helper()
	out := p.stderr.String()
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
		if strings.Contains(out, bad) {
			p.t.Errorf("sessionproxy output contains %q", bad)
		}
	}
}

// httpGet fetches http://addr+path and returns the status code and body.
func httpGet(addr, path string) (int, string, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	res, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res.StatusCode, string(body), err
}

// waitFor polls cond every 20ms until it is true or timeout passes, and reports which.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// respConn is a raw RESP client: it sends bytes as given and reads whole raw replies.
type respConn struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dialRESP(t testing.TB, addr string) *respConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &respConn{t: t, nc: nc, br: bufio.NewReaderSize(nc, 64<<10)}
}

func (c *respConn) close() { c.nc.Close() }

// send writes raw bytes.
func (c *respConn) send(b []byte) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// reply reads one whole raw reply within timeout.
func (c *respConn) reply(timeout time.Duration) (string, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	b, err := resp.AppendReply(nil, c.br)
	return string(b), err
}

// do sends one command and returns its raw reply; a missing reply fails the test.
func (c *respConn) do(args ...string) string {
	c.t.Helper()
	c.send(encode(args...))
	r, err := c.reply(5 * time.Second)
	if err != nil {
		c.t.Fatalf("%q: no reply: %v", args, err)
	}
	return r
}

// expectClosed reads until the connection ends within timeout; any byte received fails.
func (c *respConn) expectClosed(timeout time.Duration) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	rest, err := io.ReadAll(c.br)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		c.t.Errorf("connection still open after %v (extra bytes %q)", timeout, rest)
	case len(rest) > 0:
		c.t.Errorf("unexpected bytes before close: %q", rest)
	}
}

// encode is a command as a RESP multibulk.
func encode(args ...string) []byte {
	var b []byte
	b = fmt.Appendf(b, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}

// scrapeMetrics returns every sample of /metrics keyed by "name{labels}" as printed.
func scrapeMetrics(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	code, body, err := httpGet(addr, "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// clip shortens s for failure messages.
func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}
