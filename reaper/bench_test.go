package reaper

// BenchmarkSweepBatch times one sweep batch: the reap script taking Batch due ledger entries of
// sessions that have expired and removing them from index, owner map and ledger (the work the
// sweep repeats while a backlog lasts), plus the Go-side accounting. Setup per iteration (not
// timed) writes the bookkeeping the proxy would have left for Batch expired sessions.
//
//	go test ./reaper -run '^$' -bench SweepBatch -benchtime 200x

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func BenchmarkSweepBatch(b *testing.B) {
	e := reapStartEnv(b)
	ctx := context.Background()
	c := e.rdb()
	sch := e.sch
	for _, batch := range []int{64, 256, 1024} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			r, dbs, _ := e.newReaper(func(o *Options) { o.Batch = batch })
			rc := dbs.db(0)
			past := time.Now().Add(-time.Second).UnixMilli()
			// due writes batch expired sessions' bookkeeping: index entry, owner, ledger deadline.
			due := func(round int) {
				_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
					for i := range batch {
						id := "b" + strconv.Itoa(round) + "-" + strconv.Itoa(i)
						key, uid := sch.SessionKey(0, id), "u"+strconv.Itoa(i%100)
						p.SAdd(ctx, sch.IndexKey(0, uid), id)
						p.HSet(ctx, sch.OwnersKey(), key, uid)
						p.ZAdd(ctx, sch.LedgerKey(), redis.Z{Score: float64(past - int64(i)), Member: key})
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			due(-1) // warm up: script loaded (EVALSHA hits), connection dialed
			if _, err := r.rules.Load().reap.Run(ctx, rc, nil, "due", time.Now().UnixMilli(), batch).Int64Slice(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				due(i)
				b.StartTimer()
				now := time.Now()
				res, err := r.rules.Load().reap.Run(ctx, rc, nil, "due", now.UnixMilli(), batch).Int64Slice()
				if err != nil {
					b.Fatal(err)
				}
				r.account(res, pathSweep, now)
				if res[0] != int64(batch) || len(res) != batch+2 {
					b.Fatalf("batch: looked at %d, removed %d; want %d", res[0], len(res)-2, batch)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/entry")
			if n := c.ZCard(ctx, sch.LedgerKey()).Val(); n != 0 {
				b.Fatalf("ledger has %d entries left", n)
			}
		})
	}
}
