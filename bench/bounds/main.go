// Command bounds runs the memory and CPU bound scenarios of issue 14 against a fresh Redis and
// a fresh proxy each (so the proxy's peak RSS, VmHWM, is the scenario's own), while another
// client PINGs through the proxy every 10 ms (from a process of its own), and prints per scenario: the proxy's peak RSS
// against the bytes in flight, what happened to the offending clients, and the PING p50/p99 (and
// per phase where the scenario marks them: watch's connect and disconnect).
//
//	go build -o /tmp/sessionproxy ./cmd/sessionproxy
//	go run ./bench/bounds -proxy /tmp/sessionproxy [-only trickle,trickle-limit,subscriber,pipeline,bigreply,watch] [-load-nice 10]
//
// Every scenario is bounded in time (at most ~30 s) and bytes.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

func main() {
	bin := flag.String("proxy", "", "sessionproxy binary")
	only := flag.String("only", "", "comma-separated scenarios (default: all)")
	loadNice := flag.Int("load-nice", 0, "run the WATCH storm's clients under nice -n N (they would be on other hosts)")
	pingAddr := flag.String("ping", "", "internal: be the pinger process for this address")
	stormAddr := flag.String("storm", "", "internal: be the WATCH storm's client process for this address")
	flag.Parse()
	switch {
	case *pingAddr != "":
		ping(*pingAddr)
		return
	case *stormAddr != "":
		storm(*stormAddr)
		return
	}
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "bounds: -proxy is required")
		os.Exit(2)
	}
	scenarios := []struct {
		name string
		env  []string
		run  func(e *env) string
	}{
		{"trickle", nil, trickle},
		{"trickle-limit", []string{"SESSIONPROXY_CLIENTS_INPUT_MEMORY_LIMIT=256MiB"}, trickle},
		{"subscriber", nil, subscriber},
		{"pipeline", nil, pipeline},
		{"pipeline-limit", []string{"SESSIONPROXY_CLIENTS_OUTPUT_BUFFER_LIMIT=64MiB"}, pipeline},
		{"bigreply", nil, bigreply},
		{"watch", nil, watch},
	}
	fmt.Printf("%-15s %9s %9s %9s %11s  %s\n", "scenario", "peak_RSS", "ping_p50", "ping_p99", "redis_p99", "outcome")
	failed := false
	for _, sc := range scenarios {
		if *only != "" && !slices.Contains(strings.Split(*only, ","), sc.name) {
			continue
		}
		e, err := start(*bin, sc.env)
		if e != nil {
			e.loadNice = *loadNice
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bounds:", err)
			os.Exit(1)
		}
		stopPing, stopDirect := e.pinger(e.proxyAddr), e.pinger(e.redisAddr)
		outcome := sc.run(e)
		pings, direct := stopPing(), stopDirect()
		p50, p99 := pings.pct(time.Time{}, time.Time{})
		_, d99 := direct.pct(time.Time{}, time.Time{})
		fmt.Printf("%-15s %8.0fM %7.2fms %7.2fms %9.2fms  %s\n", sc.name, float64(e.peakRSS())/1e6, p50, p99, d99, outcome)
		for i, m := range e.phases { // the PINGs sent in each phase the scenario marked
			end := time.Time{}
			if i+1 < len(e.phases) {
				end = e.phases[i+1].at
			}
			p50, p99 := pings.pct(m.at, end)
			_, d99 := direct.pct(m.at, end)
			fmt.Printf("  %-13s %9s %7.2fms %7.2fms %9.2fms\n", m.name, "", p50, p99, d99)
		}
		if p99 > max(10, 2*d99) { // the bound, or twice what Redis itself shows under the load
			failed = true
		}
		e.stop()
	}
	if failed {
		os.Exit(1)
	}
}

// env is a Redis and a proxy in front of it.
type env struct {
	dir                  string
	redis, proxy         *exec.Cmd
	redisAddr, proxyAddr string
	phases               []phase // marked by the scenario (mark)
	loadNice             int     // -load-nice
}

// phase is a part of a scenario, from at to the next one's start.
type phase struct {
	name string
	at   time.Time
}

// mark starts a phase: PING percentiles are also printed per phase.
func (e *env) mark(name string) { e.phases = append(e.phases, phase{name, time.Now()}) }

// pings are one pinger's samples: when each PING was sent and its round trip in ms.
type pings struct {
	at  []time.Time
	lat []float64
}

// pct is p50 and p99 of the PINGs sent in [from, to) (zero times: unbounded); -1 if none.
func (p pings) pct(from, to time.Time) (float64, float64) {
	var l []float64
	for i, t := range p.at {
		if (from.IsZero() || !t.Before(from)) && (to.IsZero() || t.Before(to)) {
			l = append(l, p.lat[i])
		}
	}
	if len(l) == 0 {
		return -1, -1
	}
	slices.Sort(l)
	return l[len(l)/2], l[len(l)*99/100]
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func start(bin string, extra []string) (*env, error) {
	dir, err := os.MkdirTemp("", "bounds")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir, redisAddr: freePort(), proxyAddr: freePort()}
	_, rport, _ := net.SplitHostPort(e.redisAddr)
	e.redis = exec.Command("redis-server", "--port", rport, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", "redis.log", "--maxclients", "20000")
	if err := e.redis.Start(); err != nil {
		return nil, err
	}
	if err := waitPort(e.redisAddr); err != nil {
		return nil, err
	}
	e.proxy = exec.Command(bin, "-listen", e.proxyAddr, "-upstream", e.redisAddr, "-metrics", "")
	e.proxy.Env = append(os.Environ(), append([]string{"SESSIONPROXY_LOG_LEVEL=error", "SESSIONPROXY_LIMITS_MAX_CLIENTS=20000"}, extra...)...)
	e.proxy.Stderr = os.Stderr
	if err := e.proxy.Start(); err != nil {
		return nil, err
	}
	return e, waitPort(e.proxyAddr)
}

func waitPort(addr string) error {
	for range 500 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening", addr)
}

func (e *env) stop() {
	_ = e.proxy.Process.Kill()
	_ = e.proxy.Wait()
	_ = e.redis.Process.Kill()
	_ = e.redis.Wait()
	os.RemoveAll(e.dir)
}

// peakRSS is the proxy's VmHWM in bytes.
func (e *env) peakRSS() int64 {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(e.proxy.Process.Pid), "status"))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return -1
}

// pinger PINGs addr (the proxy, or Redis itself for the baseline under the same load) every
// 10 ms until stopped, and returns the samples (5000 ms: a PING got no reply). The PINGs are
// sent by a process of their own (this program with -ping): in the scenario's process they
// would wait behind its own load (10,000 dials, the readers of 100 trickling clients) and
// measure the load generator as much as the hop.
func (e *env) pinger(addr string) func() pings {
	cmd, stdin, out, err := startSelf(0, "-ping", addr)
	if err != nil {
		panic(err)
	}
	var p pings
	done := make(chan struct{})
	go func() { // "<unix ns sent> <ms>" per line
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ns int64
			var ms float64
			if _, err := fmt.Sscan(sc.Text(), &ns, &ms); err == nil {
				p.at = append(p.at, time.Unix(0, ns))
				p.lat = append(p.lat, ms)
			}
		}
	}()
	return func() pings {
		stdin.Close() // the pinger stops when its stdin closes
		<-done
		_ = cmd.Wait()
		return p
	}
}

// startSelf starts this program with args (under nice -n nice unless nice is 0), its stdin
// and stdout piped, its stderr ours: the pingers and the storm's clients run apart from the
// scenario's own work.
func startSelf(nice int, args ...string) (*exec.Cmd, io.WriteCloser, io.Reader, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	args = append([]string{self}, args...)
	if nice != 0 {
		args = append([]string{"nice", "-n", strconv.Itoa(nice)}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	return cmd, stdin, out, nil
}

// ping is the pinger process: a PING to addr every 10 ms, one line per PING on stdout, until
// stdin closes.
func ping(addr string) {
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	add := func(t time.Time, ms float64) { fmt.Fprintf(w, "%d %.3f\n", t.UnixNano(), ms) }
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		select {
		case <-stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		t := time.Now()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
			add(t, 5000)
			return
		}
		if _, err := br.ReadString('\n'); err != nil {
			add(t, 5000)
			return
		}
		add(t, float64(time.Since(t).Microseconds())/1000)
	}
}

// closedWithin reports whether c is closed by the other side within d (reading what comes).
func closedWithin(c net.Conn, d time.Duration) (bool, int64) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, err := io.Copy(io.Discard, c)
	var ne net.Error
	if ok := err != nil && (errorsAs(err, &ne) && ne.Timeout()); ok {
		return false, n
	}
	return true, n
}

func errorsAs(err error, target *net.Error) bool {
	ne, ok := err.(net.Error)
	if ok {
		*target = ne
	}
	return ok
}

// trickle: 100 clients each declare a 500 MB bulk and send 8 MB of it slowly (64 KiB every
// 50 ms, 128 MB/s in all), then go away. The proxy holds what they sent until the command is whole (as Redis
// holds it in its query buffer): 800 MB in flight.
func trickle(e *env) string {
	const clients, each, chunk = 100, 8 << 20, 64 << 10
	var wg sync.WaitGroup
	var sent, cut atomic.Int64
	buf := make([]byte, chunk)
	for range clients {
		wg.Go(func() {
			c, err := net.Dial("tcp", e.proxyAddr)
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = c.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$500000000\r\n"))
			for n := 0; n < each; n += chunk {
				if _, err := c.Write(buf); err != nil {
					cut.Add(1)
					return
				}
				sent.Add(chunk)
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	return fmt.Sprintf("%d MB sent by %d clients, in flight at once; %d disconnected", sent.Load()>>20, clients, cut.Load())
}

// subscriber: a subscriber that never reads while 1 GB is published to it (1,000 messages of
// 1 MB). Redis' pubsub output limit (32 MB hard) ends its connection of its own.
func subscriber(e *env) string {
	sub, err := net.Dial("tcp", e.proxyAddr)
	if err != nil {
		return err.Error()
	}
	defer sub.Close()
	_, _ = sub.Write(resp.AppendCommand(nil, "SUBSCRIBE", "bounds"))
	time.Sleep(200 * time.Millisecond)
	pub, err := net.Dial("tcp", e.proxyAddr)
	if err != nil {
		return err.Error()
	}
	defer pub.Close()
	br := bufio.NewReader(pub)
	msg := strings.Repeat("m", 1<<20)
	for range 1000 {
		_, _ = pub.Write(resp.AppendCommand(nil, "PUBLISH", "bounds", msg))
		if _, err := br.ReadString('\n'); err != nil {
			break
		}
	}
	closed, n := closedWithin(sub, 10*time.Second)
	return fmt.Sprintf("1 GB published; subscriber disconnected: %v (had %d MB unread)", closed, n>>20)
}

// pipeline: a client pipelines 100,000 GETs of a 100 KB value (10 GB of replies) and reads
// nothing for 10 s, then reads what comes.
func pipeline(e *env) string {
	c, err := net.Dial("tcp", e.proxyAddr)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	br := bufio.NewReader(c)
	_, _ = c.Write(resp.AppendCommand(nil, "SET", "v100k", strings.Repeat("x", 100<<10)))
	if _, err := br.ReadString('\n'); err != nil {
		return err.Error()
	}
	var req []byte
	for range 100000 {
		req = resp.AppendCommand(req, "GET", "v100k")
	}
	go func() { _, _ = c.Write(req) }()
	time.Sleep(10 * time.Second)
	closed, n := closedWithin(c, 5*time.Second)
	return fmt.Sprintf("10 GB of replies asked, not read for 10 s: disconnected %v (then %d MB read within 5 s)", closed, n>>20)
}

// bigreply: 50 pipelined GETs of a 10 MiB value, read at once.
func bigreply(e *env) string {
	c, err := net.Dial("tcp", e.proxyAddr)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	br := bufio.NewReaderSize(c, 1<<20)
	_, _ = c.Write(resp.AppendCommand(nil, "SET", "big", strings.Repeat("b", 10<<20)))
	if _, err := br.ReadString('\n'); err != nil {
		return err.Error()
	}
	var req []byte
	for range 50 {
		req = resp.AppendCommand(req, "GET", "big")
	}
	start := time.Now()
	_, _ = c.Write(req)
	_, _ = br.Peek(1)
	first := time.Since(start)
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	n, _ := io.CopyN(io.Discard, br, 50*int64(len("$10485760\r\n")+10<<20+2))
	return fmt.Sprintf("524 MB in flight: first byte after %v, %d MB read in %v", first.Round(time.Millisecond), n>>20, time.Since(start).Round(time.Millisecond))
}

// watch: 10,000 clients send WATCH (each would need a connection of its own); Redis must keep
// free connections (limits.max_dedicated, 1,000 by default). The clients are a process of their
// own (this program with -storm), under nice -n LOADNICE when -load-nice is set: in production
// they are on other hosts, here they share two cores with the proxy, Redis and the pingers.
func watch(e *env) string {
	e.mark("connect")
	cmd, stdin, out, err := startSelf(e.loadNice, "-storm", e.proxyAddr)
	if err != nil {
		return err.Error()
	}
	br := bufio.NewReader(out)
	connected, _ := br.ReadString('\n') // "<clients> <refused>": every reply read
	info := infoClients(e.redisAddr)
	e.mark("disconnect")
	stdin.Close() // the storm closes its clients
	_, _ = br.ReadString('\n')
	_ = cmd.Wait()
	time.Sleep(500 * time.Millisecond) // the proxy closes them meanwhile
	var n, refused int
	fmt.Sscan(connected, &n, &refused)
	return fmt.Sprintf("%d WATCH clients: %d refused by max_dedicated; Redis connected_clients %s", n, refused, info)
}

// storm is watch's client process: 10,000 connections to addr that each send WATCH; it prints
// how many connected and how many were refused once every reply is read, closes them all when
// its stdin closes, and says so.
func storm(addr string) {
	const clients = 10000
	conns := make([]net.Conn, 0, clients)
	refused := 0
	for range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			continue
		}
		conns = append(conns, c)
		_, _ = c.Write(resp.AppendCommand(nil, "WATCH", "w"))
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && strings.HasPrefix(line, "-") {
			refused++
		}
	}
	fmt.Printf("%d %d\n", len(conns), refused)
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	fmt.Println("closed")
}

func infoClients(addr string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	_, _ = c.Write(resp.AppendCommand(nil, "INFO", "clients"))
	br := bufio.NewReader(c)
	reply, err := resp.AppendReply(nil, br)
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(string(reply), "\r\n") {
		if v, ok := strings.CutPrefix(l, "connected_clients:"); ok {
			return v
		}
	}
	return "?"
}
