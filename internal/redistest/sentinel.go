package redistest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// StartReplica runs a redis-server that replicates master and waits until its link is up.
func StartReplica(t testing.TB, master *Server, extra ...string) *Server {
	t.Helper()
	r := Start(t, append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port)}, extra...)...)
	r.Auth = master.Auth // a replica is set up like its master
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, _ := r.Info("replication")
		if strings.Contains(info, "master_link_status:up") {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: replica %s not in sync after 10s:\n%s", r.Addr(), info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SentinelTiming is how quickly sentinels act: a master unreachable for DownAfter is down, and
// a failover that has not finished within FailoverTimeout is tried again. Conf holds more
// sentinel.conf lines (e.g. "requirepass x", "sentinel auth-pass mymaster y").
type SentinelTiming struct {
	DownAfter, FailoverTimeout time.Duration
	Conf                       []string
}

// StartSentinel runs a redis-server in sentinel mode monitoring master under name, with the
// given quorum, and stops it when the test ends. Sentinels started for the same master find
// each other through it.
func StartSentinel(t testing.TB, name string, master *Server, quorum int, tm SentinelTiming) *Server {
	t.Helper()
	Need(t, "redis-server")
	s := &Server{t: t, Dir: t.TempDir(), Port: FreePort(t)}
	conf := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
logfile redis.log
sentinel monitor %s 127.0.0.1 %d %d
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s %d
sentinel parallel-syncs %s 1
`, s.Port, s.Dir, name, master.Port, quorum, name, tm.DownAfter.Milliseconds(), name, tm.FailoverTimeout.Milliseconds(), name)
	for _, l := range tm.Conf {
		conf += l + "\n"
	}
	path := filepath.Join(s.Dir, "sentinel.conf") // sentinel rewrites it: it must be writable
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s.args = []string{path, "--sentinel"}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// Info returns INFO section from the server (the whole text).
func (s *Server) Info(section string) (string, error) {
	return s.DoText("INFO", section)
}

// DoText sends one command on a fresh connection and returns its reply as text: a bulk or
// simple string as it is, an integer in decimal, an array as its elements one per line, an
// error as an error.
func (s *Server) DoText(args ...string) (string, error) {
	c, br, err := s.send(args)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return readText(br)
}

func readText(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply line")
	}
	switch line[0] {
	case '-':
		return "", fmt.Errorf("%s", line[1:])
	case '+', ':':
		return line[1:], nil
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		parts := make([]string, 0, max(n, 0))
		for range n {
			p, err := readText(br)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
