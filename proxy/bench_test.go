package proxy

// Benchmarks of the shared path against a real redis-server (internal/redistest), in process so
// that Go allocations can be counted. Each sub-benchmark is one client sending pipelines of P
// commands and reading the P replies into a reused buffer; the client side allocates nothing
// per batch, so allocs/cmd (all Go allocations in the process / commands proxied) is the
// proxy's own count: it should stay flat as P grows. Compare runs with benchstat:
//
//	go test ./proxy -run '^$' -bench 'ProxyPipeline|SessionWrite' -benchtime 2s -count 6 | tee new.txt

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// benchKeys is the keyspace of the benchmarks: a batch of P commands uses P consecutive keys.
const benchKeys = 10000

// benchBatches prebuilds distinct batches of p commands, cmd(i) for consecutive i, so the
// timed loop only writes bytes.
func benchBatches(p int, cmd func(i int) []string) [][]byte {
	n := max(1, min(64, benchKeys/p))
	out := make([][]byte, n)
	for b := range n {
		var buf []byte
		for j := range p {
			buf = append(buf, encode(cmd((b*p+j)%benchKeys)...)...)
		}
		out[b] = buf
	}
	return out
}

// benchPipelines runs b.N round trips of one batch each on c and reports allocs/cmd and cmds/s.
func benchPipelines(b *testing.B, c *rawConn, p int, batches [][]byte) {
	b.Helper()
	// One far deadline instead of one per batch: the loop itself must not allocate.
	_ = c.nc.SetDeadline(time.Now().Add(10 * time.Minute))
	defer c.nc.SetDeadline(time.Time{})
	buf := make([]byte, 0, 64<<10)
	roundTrip := func(batch []byte) {
		if _, err := c.nc.Write(batch); err != nil {
			b.Fatalf("write: %v", err)
		}
		buf = buf[:0]
		for range p {
			var err error
			if buf, err = resp.AppendReply(buf, c.br); err != nil {
				b.Fatalf("reply: %v", err)
			}
		}
		if buf[0] == '-' {
			b.Fatalf("error reply: %q", clip(buf))
		}
	}
	for _, batch := range batches { // warm up: buffers grown, connections dialed, scripts loaded
		roundTrip(batch)
	}
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		roundTrip(batches[i%len(batches)])
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	cmds := float64(b.N) * float64(p)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/cmds, "allocs/cmd")
	b.ReportMetric(cmds/b.Elapsed().Seconds(), "cmds/s")
}

// benchFill SETs key:0..benchKeys-1 straight on Redis so the GETs hit.
func benchFill(b *testing.B, up *redistest.Server) {
	b.Helper()
	c := dialRaw(b, up.Addr())
	for _, batch := range benchBatches(100, func(i int) []string { return []string{"SET", "key:" + strconv.Itoa(i), "xyz"} }) {
		c.send(batch)
		c.replies(100)
	}
	// benchBatches covers at most 64*100 keys; fill the rest too.
	for i := 6400; i < benchKeys; i += 100 {
		var buf []byte
		for j := i; j < i+100; j++ {
			buf = append(buf, encode("SET", "key:"+strconv.Itoa(j), "xyz")...)
		}
		c.send(buf)
		c.replies(100)
	}
}

var benchDepths = []int{1, 16, 128}

// BenchmarkProxyPipeline: GET pipelines of P through the proxy's shared path ("direct" is the
// same client straight to Redis, for scale).
func BenchmarkProxyPipeline(b *testing.B) {
	up := redistest.Start(b)
	s := startProxy(b, up)
	benchFill(b, up)
	get := func(i int) []string { return []string{"GET", "key:" + strconv.Itoa(i)} }
	for _, target := range []struct {
		name string
		addr string
	}{{"proxy", s.Addr().String()}, {"direct", up.Addr()}} {
		for _, p := range benchDepths {
			b.Run(fmt.Sprintf("%s/P=%d", target.name, p), func(b *testing.B) {
				benchPipelines(b, dialRaw(b, target.addr), p, benchBatches(p, get))
			})
		}
	}
}

// BenchmarkProxyPipelineClients: the coalescing shared connection under several concurrent
// clients (P=16 each), allocs/cmd over all of them.
func BenchmarkProxyPipelineClients(b *testing.B) {
	up := redistest.Start(b)
	s := startProxy(b, up)
	benchFill(b, up)
	const p = 16
	batches := benchBatches(p, func(i int) []string { return []string{"GET", "key:" + strconv.Itoa(i)} })
	for _, clients := range []int{4, 16} {
		b.Run(fmt.Sprintf("clients=%d/P=%d", clients, p), func(b *testing.B) {
			conns := make([]net.Conn, clients)
			for i := range conns {
				conns[i] = dialRaw(b, s.Addr().String()).nc
			}
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			done := make(chan error, clients)
			per := b.N/clients + 1
			for i := range clients {
				go func(nc net.Conn) {
					done <- benchConnLoop(nc, p, per, batches)
				}(conns[i])
			}
			for range clients {
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			cmds := float64(per*clients) * p
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/cmds, "allocs/cmd")
			b.ReportMetric(cmds/b.Elapsed().Seconds(), "cmds/s")
		})
	}
}

// benchConnLoop sends n batches on nc, one at a time, reading p replies for each.
func benchConnLoop(nc net.Conn, p, n int, batches [][]byte) error {
	_ = nc.SetDeadline(time.Now().Add(10 * time.Minute))
	br := bufio.NewReaderSize(nc, 64<<10)
	buf := make([]byte, 0, 64<<10)
	for i := range n {
		if _, err := nc.Write(batches[i%len(batches)]); err != nil {
			return err
		}
		buf = buf[:0]
		for range p {
			mark := len(buf)
			var err error
			if buf, err = resp.AppendReply(buf, br); err != nil {
				return err
			}
			if buf[mark] == '-' {
				return fmt.Errorf("error reply: %q", clip(buf[mark:]))
			}
		}
	}
	return nil
}

// BenchmarkSessionWrite: HSET pipelines of P through the proxy, on a session key (rewritten
// into the apply script; owner stable, so the script's fast path after the first round) and on
// a plain key (passthrough), to show what the index costs per write.
func BenchmarkSessionWrite(b *testing.B) {
	up := redistest.Start(b)
	s := startProxy(b, up)
	for _, kind := range []struct {
		name   string
		prefix string
	}{{"session", "session:"}, {"plain", "plain:"}} {
		hset := func(i int) []string { return []string{"HSET", kind.prefix + strconv.Itoa(i), "userid", "42"} }
		for _, p := range benchDepths {
			b.Run(fmt.Sprintf("%s/P=%d", kind.name, p), func(b *testing.B) {
				benchPipelines(b, dialRaw(b, s.Addr().String()), p, benchBatches(p, hset))
			})
		}
	}
}
