package redistest

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster is a Redis Cluster of real redis-server processes on loopback.
type Cluster struct {
	Nodes []*Server // in the order given to redis-cli --cluster create: primaries first
}

// Addrs are the nodes' host:port.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// StartCluster runs primaries*(1+replicas) cluster-enabled nodes, joins them with `redis-cli
// --cluster create --cluster-replicas replicas --cluster-yes`, waits until every node reports
// the cluster ok, and stops them all when the test ends.
func StartCluster(t testing.TB, primaries, replicas int, extra ...string) *Cluster {
	t.Helper()
	Need(t, "redis-cli")
	n := primaries * (1 + replicas)
	c := &Cluster{}
	var pass string // --requirepass among extra: the nodes and redis-cli need it
	for i, a := range extra {
		if a == "--requirepass" && i+1 < len(extra) {
			pass = extra[i+1]
		}
	}
	for range n {
		port := freeClusterPort(t)
		// A replica takes over however long it was cut off: with Redis 7.0's default validity
		// factor, replicas of a killed primary refused to fail over in tests ("Disconnected from
		// master for longer than allowed") 10 s after the kill.
		// Replicas sync at once, not after Redis' 5 s wait for more replicas to share a
		// diskless transfer: tests WAIT for them.
		args := append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--cluster-replica-validity-factor", "0",
			"--repl-diskless-sync-delay", "0"}, extra...)
		node := startOn(t, port, args...)
		if pass != "" {
			node.Auth = []string{pass}
		}
		c.Nodes = append(c.Nodes, node)
	}
	create := append([]string{"--cluster", "create"}, c.Addrs()...)
	if pass != "" {
		create = append(create, "-a", pass, "--no-auth-warning")
	}
	create = append(create, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	out, err := exec.Command("redis-cli", create...).CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.WaitOK(30 * time.Second); err != nil {
		t.Fatalf("redistest: %v\n%s", err, out)
	}
	for _, n := range c.Nodes[:primaries] {
		if err := n.waitReplicas(replicas, 30*time.Second); err != nil {
			t.Fatalf("redistest: %v", err)
		}
	}
	return c
}

// waitReplicas waits until the server has n replicas in sync (state=online).
func (s *Server) waitReplicas(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		info, err := s.DoText("INFO", "replication")
		if err == nil && strings.Count(info, "state=online") >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d replicas not in sync after %v: %v %s", s.Addr(), n, timeout, err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitOK waits until every live node reports cluster_state:ok, all 16384 slots ok, and knows
// every node.
func (c *Cluster) WaitOK(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, last := true, ""
		for _, n := range c.Nodes {
			if !n.running() {
				continue // stopped by the test
			}
			info, err := n.DoText("CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
				ok, last = false, fmt.Sprintf("%s: %v %s", n.Addr(), err, info)
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not ok after %v: %s", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startOn runs a redis-server on port (see Start).
func startOn(t testing.TB, port int, extra ...string) *Server {
	t.Helper()
	s := &Server{t: t, Dir: t.TempDir(), Port: port}
	s.args = append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.Dir, "--logfile", "redis.log"}, extra...)
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// freeClusterPort is a free port whose cluster bus port (+10000) is free too, below 55535. Both
// are picked below the kernel's ephemeral range where it leaves room (as FreePort does): a bus
// port in that range was once taken by an outgoing connection between the check and Redis' bind.
func freeClusterPort(t testing.TB) int {
	t.Helper()
	lo := ephemeralLow()
	for range 200 {
		p := FreePort(t)
		if p+10000 >= 65536 || lo > minPort+10000+1000 && p+10000 >= lo {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatal("redistest: no free port pair for a cluster node")
	return 0
}

// running reports whether the server process is up (not stopped by the test).
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}
