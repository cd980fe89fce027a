// Command soak drives a proxy with mixed traffic from many connections for a bounded time and
// then checks what must hold after it (issue 14): zero index drift (SESSIONS.CHECK through the
// proxy once every session written has expired or been deleted and reaped), proxy RSS and
// goroutine counts flat (sampled from its /metrics), and no error a client saw.
//
// Traffic, per connection, about every -pause: session writes with short TTLs (HSET + EXPIRE,
// and HSET with EXPIRE inside MULTI), reads of them, DEL of some, SESSIONS.LIST/COUNT, plain
// SET/GET/INCR, and PUBLISH. bench/soak.sh starts Redis and the proxy and runs it.
//
//	go run ./bench/soak -addr 127.0.0.1:6380 -metrics 127.0.0.1:9380 -conns 200 -duration 10m
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6380", "proxy address")
	metrics := flag.String("metrics", "127.0.0.1:9380", "proxy metrics address")
	conns := flag.Int("conns", 200, "client connections")
	duration := flag.Duration("duration", 10*time.Minute, "how long the load runs")
	pause := flag.Duration("pause", 10*time.Millisecond, "pause between one connection's operations")
	maxTTL := flag.Int("maxttl", 5, "session TTLs are 1..maxttl seconds")
	flag.Parse()
	if err := run(*addr, *metrics, *conns, *duration, *pause, *maxTTL); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

type stats struct {
	ops, errs atomic.Int64
	mu        sync.Mutex
	firstErrs []string
}

func (s *stats) fail(err error) {
	s.errs.Add(1)
	s.mu.Lock()
	if len(s.firstErrs) < 10 {
		s.firstErrs = append(s.firstErrs, err.Error())
	}
	s.mu.Unlock()
}

func run(addr, metricsAddr string, conns int, duration, pause time.Duration, maxTTL int) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: conns, MinIdleConns: conns, MaxRetries: -1,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, PoolTimeout: 30 * time.Second})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return err
	}
	var st stats
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for id := range conns {
		wg.Go(func() { load(ctx, rdb, id, maxTTL, pause, stop, &st) })
	}
	fmt.Printf("%-8s %10s %8s %12s %10s\n", "elapsed", "ops", "errors", "rss_MB", "goroutines")
	start := time.Now()
	var samples [][2]float64
	sample := func() {
		rss, gor := scrape(metricsAddr)
		samples = append(samples, [2]float64{rss, gor})
		fmt.Printf("%-8s %10d %8d %12.1f %10.0f\n", time.Since(start).Round(time.Second), st.ops.Load(), st.errs.Load(), rss/1e6, gor)
	}
	tick := time.NewTicker(30 * time.Second)
	deadline := time.After(duration)
	sample()
loop:
	for {
		select {
		case <-tick.C:
			sample()
		case <-deadline:
			break loop
		}
	}
	tick.Stop()
	close(stop)
	wg.Wait()
	sample()
	// Every session written has a TTL of at most maxTTL: after it, and the reaper's sweep, the
	// index must hold nothing that does not exist and miss nothing that does.
	time.Sleep(time.Duration(maxTTL+3) * time.Second)
	check, err := rdb.Do(ctx, "SESSIONS.CHECK").Slice()
	if err != nil {
		return fmt.Errorf("SESSIONS.CHECK: %w", err)
	}
	left, err := rdb.Keys(ctx, "session:soak:*").Result()
	if err != nil {
		return err
	}
	fmt.Printf("SESSIONS.CHECK: %v; sessions left: %d\n", check, len(left))
	if len(samples) > 2 {
		base, last := samples[1], samples[len(samples)-1]
		fmt.Printf("RSS %.1f MB after 30 s, %.1f MB at the end; goroutines %.0f and %.0f\n", base[0]/1e6, last[0]/1e6, base[1], last[1])
	}
	fmt.Printf("%d operations, %d errors\n", st.ops.Load(), st.errs.Load())
	for _, e := range st.firstErrs {
		fmt.Println("  error:", e)
	}
	drift := false
	for i := 0; i+1 < len(check); i += 2 {
		k, _ := check[i].(string)
		if v, ok := check[i+1].(int64); ok && v > 0 && (k == "missing" || k == "stale" || k == "orphans") {
			drift = true
		}
	}
	if drift || st.errs.Load() > 0 {
		return errors.New("the soak found drift or errors")
	}
	return nil
}

// load is one connection's traffic until stop.
func load(ctx context.Context, rdb *redis.Client, id, maxTTL int, pause time.Duration, stop <-chan struct{}, st *stats) {
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		sid := fmt.Sprintf("session:soak:%d:%d", id, seq%50)
		uid := strconv.Itoa(rng.IntN(500))
		ttl := time.Duration(1+rng.IntN(maxTTL)) * time.Second
		var err error
		switch p := rng.IntN(100); {
		case p < 35:
			_, err = rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
				pl.HSet(ctx, sid, "userid", uid, "data", "x")
				pl.Expire(ctx, sid, ttl)
				return nil
			})
		case p < 45:
			_, err = rdb.TxPipelined(ctx, func(pl redis.Pipeliner) error {
				pl.HSet(ctx, sid, "userid", uid)
				pl.Expire(ctx, sid, ttl)
				return nil
			})
		case p < 55:
			err = ignoreNil(rdb.HGetAll(ctx, sid).Err())
		case p < 62:
			err = rdb.Del(ctx, sid).Err()
		case p < 70:
			err = rdb.Do(ctx, "SESSIONS.COUNT", uid).Err()
		case p < 75:
			err = rdb.Do(ctx, "SESSIONS.LIST", uid).Err()
		case p < 88:
			k := "soak:plain:" + strconv.Itoa(rng.IntN(1000))
			if err = rdb.Set(ctx, k, seq, time.Minute).Err(); err == nil {
				err = ignoreNil(rdb.Get(ctx, k).Err())
			}
		case p < 95:
			err = rdb.Incr(ctx, "soak:counter").Err()
		default:
			err = rdb.Publish(ctx, "soak:chan", "m").Err()
		}
		st.ops.Add(1)
		if err != nil {
			st.fail(err)
		}
		time.Sleep(pause)
	}
}

func ignoreNil(err error) error {
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

// scrape reads the proxy process's RSS and goroutine count from its /metrics.
func scrape(addr string) (rss, goroutines float64) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1, -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseFloat(val, 64)
		switch name {
		case "process_resident_memory_bytes":
			rss = v
		case "go_goroutines":
			goroutines = v
		}
	}
	return rss, goroutines
}
