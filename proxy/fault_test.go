package proxy

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/faultproxy"
	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// TestFaults: clients write and read back values unique to them while the link to Redis
// misbehaves (latency spikes, resets in the middle of replies, a stall past the command bound)
// and Redis itself is killed and restarted (appendonly, fsync always). Each reply a client gets
// is either the right one or an error: never a reply meant for another command or client. And
// every write a client saw acknowledged is in Redis afterwards.
func TestFaults(t *testing.T) {
	up := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	relay := faultproxy.Start(t, up.Addr())
	relay.Delay = 20 * time.Millisecond
	s := startProxy(t, up, func(o *Options) {
		o.Upstream, o.CommandTimeout, o.DialTimeout = relay.Addr, time.Second, 500*time.Millisecond
	})
	const clients = 8
	var (
		stop               atomic.Bool
		wg                 sync.WaitGroup
		mu                 sync.Mutex
		acked              = map[string]string{}
		oks, errs, redials atomic.Int64
	)
	for id := range clients {
		wg.Go(func() {
			var nc net.Conn
			var br *bufio.Reader
			for seq := 0; !stop.Load(); seq++ {
				if nc == nil {
					c, err := net.DialTimeout("tcp", s.Addr().String(), time.Second)
					if err != nil {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					nc, br = c, bufio.NewReader(c)
					redials.Add(1)
				}
				key, val := fmt.Sprintf("fault:%d:%d", id, seq), fmt.Sprintf("v%d.%d", id, seq)
				_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
				// A session write too: after Redis' restart its script cache is empty, and the
				// proxy's NOSCRIPT retry runs under the faults.
				batch := append(resp.AppendCommand(nil, "SET", key, val), resp.AppendCommand(nil, "GET", key)...)
				batch = resp.AppendCommand(batch, "HSET", "session:"+key, "userid", strconv.Itoa(id))
				_, err := nc.Write(batch)
				var set, get, hset []byte
				if err == nil {
					set, err = resp.AppendReply(nil, br)
				}
				if err == nil {
					get, err = resp.AppendReply(nil, br)
				}
				if err == nil {
					hset, err = resp.AppendReply(nil, br)
				}
				if err == nil && string(hset) != ":1\r\n" && hset[0] != '-' {
					t.Errorf("client %d: HSET session:%s got %q", id, key, hset)
				}
				if err != nil { // the proxy closed the connection: a fresh one
					nc.Close()
					nc = nil
					continue
				}
				switch {
				case string(set) == "+OK\r\n":
					mu.Lock()
					acked[key] = val
					mu.Unlock()
					oks.Add(1)
				case set[0] == '-':
					errs.Add(1)
				default:
					t.Errorf("client %d: SET %s got %q", id, key, set)
				}
				want := fmt.Sprintf("$%d\r\n%s\r\n", len(val), val)
				switch {
				case string(get) == want:
				case get[0] == '-':
					errs.Add(1)
				case string(set) != "+OK\r\n" && string(get) == "$-1\r\n": // the SET was lost before Redis
				default:
					t.Errorf("client %d: GET %s got %q, want %q (SET said %q)", id, key, get, want, set)
				}
			}
			if nc != nil {
				nc.Close()
			}
		})
	}
	// phase applies f for d, then lets the link recover, and returns the writes acknowledged and
	// the errors seen meanwhile.
	phase := func(name string, f faultproxy.Fault, d time.Duration) (int64, int64) {
		t.Helper()
		ok0, err0 := oks.Load(), errs.Load()
		relay.Set(f)
		time.Sleep(d)
		relay.Set(faultproxy.Pass)
		time.Sleep(300 * time.Millisecond)
		ok, bad := oks.Load()-ok0, errs.Load()-err0
		t.Logf("%s: %d acknowledged writes, %d errors", name, ok, bad)
		return ok, bad
	}
	if ok, _ := phase("clean", faultproxy.Pass, 300*time.Millisecond); ok == 0 {
		t.Fatal("nothing acknowledged on a clean link")
	}
	if ok, _ := phase("latency spikes", faultproxy.Delay, 500*time.Millisecond); ok == 0 {
		t.Error("nothing acknowledged through latency spikes")
	}
	resetErrs := int64(0)
	for range 5 {
		_, bad := phase("reset mid-reply", faultproxy.Reset, 30*time.Millisecond)
		resetErrs += bad
	}
	if resetErrs == 0 || relay.Resets() == 0 {
		t.Errorf("resets mid-reply: %d cut, %d errors", relay.Resets(), resetErrs)
	}
	if _, bad := phase("stall past command_timeout", faultproxy.Stall, 2*time.Second); bad == 0 {
		t.Error("a stall past command_timeout gave no error: the clients waited it out")
	}
	up.Restart() // SIGKILL, then the same port and files: the append-only file is replayed
	if ok, _ := phase("after a kill and restart", faultproxy.Pass, time.Second); ok == 0 {
		t.Error("nothing acknowledged after Redis came back: the proxy did not recover")
	}
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	lost := 0
	for key, val := range acked {
		got, err := up.DoText("GET", key)
		if err != nil || got != val {
			lost++
			if lost < 5 {
				t.Errorf("acknowledged write lost: %s = %q (%v), want %q", key, got, err, val)
			}
		}
	}
	t.Logf("%d acknowledged writes checked, %d lost; %d errors, %d connections, %d resets", len(acked), lost, errs.Load(), redials.Load(), relay.Resets())
}
