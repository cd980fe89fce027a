// Package redistest starts real redis-server processes on free loopback ports for tests.
//
// It never mocks Redis: every server is /usr/bin/redis-server (or the one on PATH) started with
// --save ” --appendonly no unless a test asks for persistence, and stopped by t.Cleanup.
package redistest

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is one redis-server process owned by a test.
type Server struct {
	Port int
	Dir  string // working directory (dump/aof files live here)
	// Auth, if set, is sent as AUTH's arguments before each of Do's and DoText's commands.
	Auth []string

	t    testing.TB
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Addr is the server's loopback host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// Start runs a redis-server on a free port with the given extra arguments (e.g. "--requirepass",
// "pw") and stops it when the test ends. It skips the test when redis-server is not installed.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	Need(t, "redis-server")
	port := FreePort(t)
	if slices.Contains(extra, "--cluster-enabled") {
		port = freeClusterPort(t) // its bus port must be free too
	}
	return startOn(t, port, extra...)
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command("redis-server", s.args...)
	cmd.Dir = s.Dir
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redistest: start redis-server: %v", err)
	}
	s.cmd = cmd
	go cmd.Wait() //nolint:errcheck // reaped here; exit status is irrelevant
	if err := waitReady(s.Addr(), 10*time.Second); err != nil {
		s.t.Fatalf("redistest: %v (log: %s)", err, s.Log())
	}
}

// Stop terminates the server (SIGKILL: tests want abrupt failure, not a graceful save).
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	// Wait until the port is free so a Restart can bind it again.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr(), 50*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	s.cmd = nil
}

// Restart starts the server again on the same port with the same arguments.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Log returns the server's log file, for failure messages.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	return string(b)
}

// Do sends one command on a fresh connection and returns the raw reply line(s) as text; it is a
// small helper for test setup, not for checking reply bytes (use a real client for that).
func (s *Server) Do(args ...string) (string, error) {
	c, br, err := s.send(args)
	if err != nil {
		return "", err
	}
	defer c.Close()
	line, err := br.ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

// send writes one command on a fresh connection (deadline 5 s) for its reply to be read.
func (s *Server) send(args []string) (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	cmds := [][]string{args}
	if s.Auth != nil {
		cmds = [][]string{append([]string{"AUTH"}, s.Auth...), args}
	}
	for _, cmd := range cmds {
		fmt.Fprintf(&b, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(c)
	if s.Auth != nil {
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
			c.Close()
			return nil, nil, fmt.Errorf("redistest: AUTH: %q %v", line, err)
		}
	}
	return c, br, nil
}

// FreePort returns a loopback TCP port that was free a moment ago. It is picked below the
// kernel's ephemeral range: a port from there (what listening on ":0" gives) can be taken as the
// local port of some outgoing connection before the server binds it, which under load made
// servers fail to start with "address already in use".
func FreePort(t testing.TB) int {
	t.Helper()
	if lo := ephemeralLow(); lo > minPort+1000 {
		for range 100 {
			p := minPort + rand.IntN(lo-minPort)
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err == nil {
				l.Close()
				return p
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// minPort is the lowest port FreePort hands out.
const minPort = 10000

// ephemeralLow is the first port of the kernel's range for outgoing connections (Linux; 0 where
// it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	lo, _ := strconv.Atoi(f[0])
	return lo
}

func waitReady(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") || strings.HasPrefix(line, "-AUTH")) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s not ready after %v", addr, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
