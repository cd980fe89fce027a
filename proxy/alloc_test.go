package proxy

import (
	"runtime"
	"strconv"
	"testing"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestSharedPathAllocs guards the allocation count of the shared path, which the throughput at
// -P 16 depends on: a pipelined batch through the proxy allocates next to nothing per command
// (~0.01 measured; 2.3 with the unpatched redcon reader, see third_party/redcon/PATCH.md). It
// counts process-wide mallocs as the benchmarks do, so the bound is loose enough that
// background work cannot make it flaky. Not parallel: other tests' allocations would count.
func TestSharedPathAllocs(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up)
	for _, tc := range []struct {
		name string
		cmd  func(i int) []string
	}{
		{"GET", func(i int) []string { return []string{"GET", "key:" + strconv.Itoa(i)} }},
		{"HSET session", func(i int) []string { return []string{"HSET", "session:" + strconv.Itoa(i), "userid", "42"} }},
		// 21 arguments a command and batches over 4 KiB: redcon's argument marks and read
		// buffer growth (third_party/redcon/PATCH.md).
		{"MSET 10 keys", func(i int) []string {
			args := []string{"MSET"}
			for k := range 10 {
				args = append(args, "key:"+strconv.Itoa(i*10+k), "xyz")
			}
			return args
		}},
	} {
		const p, n = 16, 300
		batches := benchBatches(p, tc.cmd)
		nc := dialRaw(t, s.Addr().String()).nc
		if err := benchConnLoop(nc, p, 2*len(batches), batches); err != nil { // warm up
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := benchConnLoop(nc, p, n, batches)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		perCmd := float64(after.Mallocs-before.Mallocs) / (n * p)
		t.Logf("%s: %.3f allocations per command", tc.name, perCmd)
		if perCmd > 0.25 {
			t.Errorf("%s: %.3f allocations per proxied command, want < 0.25", tc.name, perCmd)
		}
	}
}
