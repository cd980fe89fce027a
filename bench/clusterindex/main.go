// Command clusterindex measures the session index on a Redis Cluster through sessionproxy
// (bench/cluster_index.sh runs it):
//
//	-mode converge: write-to-index convergence. Owner changes through the proxy, one at a time;
//	  after each, the index key is read straight from the cluster until the session is in it.
//	  Prints p50, p99 and max in ms.
//	-mode reap: -n sessions through the proxy with TTLs spread over -within; once the last is
//	  due, waits 3 s, then counts index entries left (leaks) and prints the reap lag p50/p99 from
//	  the proxies' sessionproxy_reaper_lag_seconds histograms (-metrics, comma-separated).
//
// Every loop is bounded in count and time; only loopback addresses are used by the scripts.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	proxy := flag.String("proxy", "127.0.0.1:6380", "sessionproxy address")
	seed := flag.String("cluster", "", "a cluster node, to read the index straight from the cluster")
	mode := flag.String("mode", "converge", "converge or reap")
	n := flag.Int("n", 2000, "probes (converge) or sessions (reap)")
	users := flag.Int("users", 1000, "distinct user ids")
	within := flag.Duration("within", 10*time.Second, "reap: TTLs spread over 1 s to this")
	metrics := flag.String("metrics", "", "reap: the proxies' metrics addresses, comma-separated")
	flag.Parse()
	ctx := context.Background()
	px := redis.NewClient(&redis.Options{Addr: *proxy, PoolSize: 4})
	defer px.Close()
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{*seed}})
	defer cl.Close()
	var err error
	switch *mode {
	case "converge":
		err = converge(ctx, px, cl, *n, *users)
	case "reap":
		err = reap(ctx, px, cl, *n, *users, *within, *metrics)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "clusterindex:", err)
		os.Exit(1)
	}
}

func converge(ctx context.Context, px *redis.Client, cl *redis.ClusterClient, n, users int) error {
	lat := make([]time.Duration, 0, n)
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		sid := "probe-" + strconv.Itoa(i%500)
		uid := strconv.Itoa(rand.IntN(users))
		start := time.Now()
		if err := px.HSet(ctx, "session:"+sid, "userid", uid).Err(); err != nil {
			return err
		}
		for {
			ok, err := cl.SIsMember(ctx, "user:"+uid, sid).Result()
			if err != nil {
				return err
			}
			if ok {
				break
			}
			if time.Since(start) > 5*time.Second {
				return fmt.Errorf("session %s not in user:%s after 5 s", sid, uid)
			}
			time.Sleep(100 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	fmt.Printf("converge n=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n", len(lat), q(0.5), q(0.99), q(1))
	return nil
}

func reap(ctx context.Context, px *redis.Client, cl *redis.ClusterClient, n, users int, within time.Duration, metrics string) error {
	start := time.Now()
	for i := 0; i < n; i += 1000 {
		pipe := px.Pipeline()
		for j := i; j < min(i+1000, n); j++ {
			k := "session:reap-" + strconv.Itoa(j)
			pipe.HSet(ctx, k, "userid", strconv.Itoa(j%users))
			pipe.PExpire(ctx, k, time.Second+time.Duration(rand.Int64N(int64(within-time.Second))))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	wrote := time.Since(start)
	// Each TTL runs from its write: the last deadline is at most within after the last write.
	time.Sleep(within + 3*time.Second)
	left := 0
	var mu sync.Mutex
	err := cl.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		it := node.Scan(ctx, 0, "user:*", 1000).Iterator()
		for it.Next(ctx) {
			ms, err := node.SMembers(ctx, it.Val()).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			for _, m := range ms {
				if strings.HasPrefix(m, "reap-") {
					left++
				}
			}
			mu.Unlock()
		}
		return it.Err()
	})
	if err != nil {
		return err
	}
	buckets := map[float64]float64{}
	for _, a := range strings.Split(metrics, ",") {
		if a == "" {
			continue
		}
		if err := histogram(a, "sessionproxy_reaper_lag_seconds_bucket", buckets); err != nil {
			return err
		}
	}
	fmt.Printf("reap n=%d written_in_s=%.1f leaks_3s_after_last_deadline=%d lag_p50_s=%.3f lag_p99_s=%.3f\n",
		n, wrote.Seconds(), left, quantile(buckets, 0.5), quantile(buckets, 0.99))
	return nil
}

// histogram adds the cumulative bucket counts of a histogram family (all label sets) from a
// Prometheus text endpoint into into, by upper bound.
func histogram(addr, family string, into map[float64]float64) error {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, family+"{") {
			continue
		}
		i := strings.Index(line, `le="`)
		j := strings.LastIndexByte(line, ' ')
		if i < 0 || j < 0 {
			continue
		}
		le := line[i+4 : i+4+strings.IndexByte(line[i+4:], '"')]
		bound := math.Inf(1)
		if le != "+Inf" {
			if bound, err = strconv.ParseFloat(le, 64); err != nil {
				return err
			}
		}
		v, err := strconv.ParseFloat(line[j+1:], 64)
		if err != nil {
			return err
		}
		into[bound] += v
	}
	return sc.Err()
}

// quantile interpolates linearly within the bucket holding the q-th observation, as
// Prometheus' histogram_quantile does.
func quantile(buckets map[float64]float64, q float64) float64 {
	bounds := make([]float64, 0, len(buckets))
	for b := range buckets {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 || buckets[bounds[len(bounds)-1]] == 0 {
		return math.NaN()
	}
	rank := q * buckets[bounds[len(bounds)-1]]
	lo, below := 0.0, 0.0
	for _, b := range bounds {
		c := buckets[b]
		if c >= rank {
			if math.IsInf(b, 1) {
				return lo
			}
			return lo + (b-lo)*(rank-below)/math.Max(c-below, 1)
		}
		lo, below = b, c
	}
	return lo
}
