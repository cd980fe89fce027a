package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// sentinelSet is a master, its replica and three sentinels (quorum 2) on loopback.
type sentinelSet struct {
	master, replica *redistest.Server
	sentinels       []*redistest.Server
	auth            bool // passwords on the nodes and on the sentinels
}

const sentinelMaster = "mymaster"

// Passwords of the authenticated set: the data nodes', and the sentinels' own.
const (
	nodePass     = "n0de-pw"
	sentinelPass = "s3ntinel-pw"
)

func startSentinelSet(t *testing.T, auth bool) *sentinelSet {
	t.Helper()
	var extra []string
	tm := redistest.SentinelTiming{DownAfter: time.Second, FailoverTimeout: 3 * time.Second}
	if auth {
		extra = []string{"--requirepass", nodePass, "--masterauth", nodePass}
		tm.Conf = []string{"requirepass " + sentinelPass, "sentinel sentinel-pass " + sentinelPass,
			"sentinel auth-pass " + sentinelMaster + " " + nodePass}
	}
	m := redistest.Start(t, extra...)
	if auth {
		m.Auth = []string{nodePass}
	}
	r := redistest.StartReplica(t, m, extra...)
	set := &sentinelSet{master: m, replica: r, auth: auth}
	for range 3 {
		s := redistest.StartSentinel(t, sentinelMaster, m, 2, tm)
		if auth {
			s.Auth = []string{sentinelPass}
		}
		set.sentinels = append(set.sentinels, s)
	}
	// Ready once every sentinel knows the replica and the other two sentinels.
	if !waitFor(20*time.Second, func() bool {
		for _, s := range set.sentinels {
			info, err := s.Info("sentinel")
			if err != nil || !strings.Contains(info, "slaves=1,sentinels=3") {
				return false
			}
		}
		return true
	}) {
		info, _ := set.sentinels[0].Info("sentinel")
		t.Fatalf("sentinels did not find each other and the replica within 20s: %s", info)
	}
	return set
}

func (s *sentinelSet) env() []string {
	addrs := make([]string, len(s.sentinels))
	for i, x := range s.sentinels {
		addrs[i] = x.Addr()
	}
	env := []string{"SESSIONPROXY_UPSTREAM_MODE=sentinel", "SESSIONPROXY_UPSTREAM_ADDRS=" + strings.Join(addrs, ","),
		"SESSIONPROXY_UPSTREAM_SENTINEL_MASTER=" + sentinelMaster}
	if s.auth {
		env = append(env, "SESSIONPROXY_UPSTREAM_PASSWORD="+nodePass, "SESSIONPROXY_UPSTREAM_SENTINEL_PASSWORD="+sentinelPass)
	}
	return env
}

// masterNamed is what the first live sentinel names as the master.
func (s *sentinelSet) masterNamed() string {
	for _, x := range s.sentinels {
		if out, err := x.DoText("SENTINEL", "get-master-addr-by-name", sentinelMaster); err == nil {
			hp := strings.Split(out, "\n")
			if len(hp) == 2 {
				return net.JoinHostPort(hp[0], hp[1])
			}
		}
	}
	return ""
}

// TestSentinelFailover: the proxy in sentinel mode forwards to the master the sentinels name;
// kill -9 of the master under load: the proxy follows the failover (new connections work within
// 2 s of the sentinels' switch), no write that WAIT saw replicated is lost, clients on
// dedicated connections are disconnected, /readyz and the metrics name the new master, and the
// reaper works on the new master (a session expiring after the failover leaves the index).
func TestSentinelFailover(t *testing.T) {
	set := startSentinelSet(t, false)
	p := startProxy(t, set.master.Addr(), append(set.env(), "SESSIONPROXY_REAPER_INTERVAL=200ms")...)
	ctx := context.Background()
	if _, body, _ := httpGet(p.HTTP, "/readyz"); !strings.Contains(body, "upstream "+set.master.Addr()) {
		t.Fatalf("/readyz before the failover: %q, want it to name %s", body, set.master.Addr())
	}

	// A subscriber: its dedicated connection to the master must end with the master.
	sub := dialRESP(t, p.Addr)
	sub.do("SUBSCRIBE", "news")

	// Writers: SET then WAIT 1 0 on the same connection (WAIT makes it dedicated); a key counts
	// as acknowledged and replicated once WAIT reports one replica.
	var mu sync.Mutex
	acked := map[string]string{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1, PoolSize: 1, Protocol: 2,
					DisableIdentity: true, ReadTimeout: 3 * time.Second})
				for j := 0; j < 200; j++ {
					k, v := fmt.Sprintf("w%d:%d:%d", w, i, j), fmt.Sprint(j)
					var n *redis.Cmd
					_, err := c.Pipelined(ctx, func(pp redis.Pipeliner) error {
						pp.Set(ctx, k, v, 0)
						n = pp.Do(ctx, "WAIT", 1, 0)
						return nil
					})
					if err != nil {
						break // the connection failed: a new one
					}
					if r, _ := n.Int64(); r >= 1 {
						mu.Lock()
						acked[k] = v
						mu.Unlock()
					}
				}
				c.Close()
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	before := len(acked)
	mu.Unlock()
	if before == 0 {
		t.Fatal("no write acknowledged and replicated before the failover")
	}

	old := set.master.Addr()
	killed := time.Now()
	set.master.Stop() // SIGKILL
	var switched time.Time
	if !waitFor(30*time.Second, func() bool { return set.masterNamed() == set.replica.Addr() }) {
		t.Fatalf("the sentinels did not fail over to %s within 30s (they name %s)", set.replica.Addr(), set.masterNamed())
	}
	switched = time.Now()
	t.Logf("sentinels switched %v after the kill", switched.Sub(killed).Round(time.Millisecond))

	// New connections work within 2 s of the switch.
	probe := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1, Protocol: 2, DisableIdentity: true})
	defer probe.Close()
	var served time.Time
	for deadline := switched.Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := probe.Set(ctx, "probe", "1", 0).Err(); err == nil {
			served = time.Now()
			break
		}
	}
	if served.IsZero() || served.Sub(switched) > 2*time.Second {
		t.Fatalf("writes through the proxy not served within 2s of the switch (served %v after)", served.Sub(switched))
	}
	t.Logf("writes served %v after the sentinels' switch", served.Sub(switched).Round(time.Millisecond))

	// The subscriber was disconnected (its master is gone), as a direct client would be.
	if _, err := sub.reply(3 * time.Second); err == nil {
		t.Error("the subscriber's connection still open after the failover")
	}

	if _, body, _ := httpGet(p.HTTP, "/readyz"); !strings.Contains(body, "upstream "+set.replica.Addr()) {
		t.Errorf("/readyz after the failover: %q, want it to name %s", body, set.replica.Addr())
	}
	m := scrapeMetrics(t, p.HTTP)
	if m[`sessionproxy_upstream_master{addr="`+set.replica.Addr()+`"}`] != 1 ||
		m[`sessionproxy_upstream_master{addr="`+old+`"}`] != 0 || m["sessionproxy_upstream_failovers_total"] != 1 {
		t.Errorf("metrics do not show the new master and one failover: %v", m)
	}

	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	// Every write WAIT saw replicated is on the new master.
	mu.Lock()
	lost := 0
	for k, v := range acked {
		if got, err := probe.Get(ctx, k).Result(); err != nil || got != v {
			lost++
			if lost < 5 {
				t.Errorf("acknowledged write %s=%s: got %q, %v", k, v, got, err)
			}
		}
	}
	t.Logf("%d writes acknowledged and replicated, %d lost", len(acked), lost)
	mu.Unlock()

	// The reaper follows: a session that expires after the failover leaves the index.
	if err := probe.HSet(ctx, "session:after", "userid", "77").Err(); err != nil {
		t.Fatal(err)
	}
	if err := probe.PExpire(ctx, "session:after", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if m, _ := probe.SMembers(ctx, "user:77").Result(); len(m) != 1 || m[0] != "after" {
		t.Fatalf("index after the write: %v", m)
	}
	if !waitFor(5*time.Second, func() bool {
		n, err := probe.Exists(ctx, "user:77").Result()
		return err == nil && n == 0
	}) {
		m, _ := probe.SMembers(ctx, "user:77").Result()
		t.Errorf("the expired session is still indexed 5s later: %v\n%s", m, p.stderr.String())
	}
	p.checkLog()
}

// TestSentinelSwitchover: a failover with the old master alive (SENTINEL FAILOVER): it is
// demoted to a replica and answers -READONLY. Once the proxy has seen the switch (its failover
// metric), every write goes to the new master and succeeds; the subscriber's dedicated
// connection to the old master was closed. The nodes and the sentinels require passwords here
// (upstream.password, upstream.sentinel.password).
func TestSentinelSwitchover(t *testing.T) {
	set := startSentinelSet(t, true)
	p := startProxy(t, set.master.Addr(), set.env()...)
	ctx := context.Background()
	// The clients AUTH with the nodes' password: the proxy's own (upstream.password) is not lent.
	c := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1, Protocol: 2, DisableIdentity: true, Password: nodePass})
	defer c.Close()
	if err := c.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	sub := dialRESP(t, p.Addr)
	if got := sub.do("AUTH", nodePass); got != "+OK\r\n" {
		t.Fatalf("AUTH: %q", got)
	}
	sub.do("SUBSCRIBE", "news")
	if _, err := set.sentinels[0].DoText("SENTINEL", "FAILOVER", sentinelMaster); err != nil {
		t.Fatal(err)
	}
	if !waitFor(20*time.Second, func() bool {
		return scrapeMetrics(t, p.HTTP)["sessionproxy_upstream_failovers_total"] == 1
	}) {
		t.Fatalf("the proxy did not follow the switchover within 20s (sentinels name %s)", set.masterNamed())
	}
	if got := set.masterNamed(); got != set.replica.Addr() {
		t.Fatalf("sentinels name %s, want the former replica %s", got, set.replica.Addr())
	}
	// The former master is alive (the sentinels demote it once they see it still acting as a
	// master, within seconds); through the proxy, writes succeed and land on the new master.
	for i := range 200 {
		if err := c.Set(ctx, "k", fmt.Sprint(i), 0).Err(); err != nil {
			t.Fatalf("write %d after the switch: %v", i, err)
		}
	}
	if got, _ := set.replica.DoText("GET", "k"); got != "199" {
		t.Errorf("the new master has k=%q, want 199", got)
	}
	if _, err := sub.reply(3 * time.Second); err == nil {
		t.Error("the subscriber's connection to the former master still open")
	}
	p.checkLog()
}
