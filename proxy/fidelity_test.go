package proxy

// Fidelity beyond the corpus (issue 11): sequences over several connections, with timing
// (busy scripts, blocking reads racing other clients), run straight against redis-server and
// through the proxy; the reply bytes must be identical.

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// sideBySide runs scenario against Redis directly, then (after reset) through a proxy in front
// of the same server, and fails on any difference in what it returns.
func sideBySide(t *testing.T, up *redistest.Server, p *Server, reset func(), scenario func(addr string) []string) {
	t.Helper()
	want := scenario(up.Addr())
	reset()
	got := scenario(p.Addr().String())
	if strings.Join(want, "|") != strings.Join(got, "|") {
		t.Errorf("through the proxy:\n got  %q\n want %q", got, want)
	}
}

// TestAuthEmptyPassword: `AUTH u1 ""` logs in a nopass user; its commands must run as u1, never
// as the proxy's (default) user (issue 11, item 4).
func TestAuthEmptyPassword(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up)
	setup := func() {
		if r, err := up.Do("ACL", "SETUSER", "u1", "reset", "on", "nopass", "+get", "+select", "~cache:*"); err != nil || r != "+OK" {
			t.Fatalf("ACL SETUSER: %q %v", r, err)
		}
	}
	setup()
	sideBySide(t, up, p, setup, func(addr string) []string {
		c := dialRaw(t, addr)
		return []string{c.do("AUTH", "u1", ""), c.do("GET", "violated:0"), c.do("ACL", "WHOAMI"), c.do("GET", "cache:1")}
	})
}

// TestAuthKeepsDB: a client that chose its DB and then logs in as a user without +select stays
// in that DB, as on Redis (issue 11, item 5); and such a user's own SELECT is judged as that
// user.
func TestAuthKeepsDB(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up)
	reset := func() {
		if r, err := up.Do("FLUSHALL"); err != nil || r != "+OK" {
			t.Fatalf("FLUSHALL: %q %v", r, err)
		}
	}
	sideBySide(t, up, p, reset, func(addr string) []string {
		c := dialRaw(t, addr)
		a := dialRaw(t, addr)
		out := []string{c.do("SELECT", "9"), c.do("ACL", "SETUSER", "bob", "on", ">123", "+set", "+get", "~x*"),
			c.do("AUTH", "bob", "123"), c.do("SET", "xx", "1"), c.do("SET", "xx", "2"), c.do("SELECT", "3"),
			c.do("GET", "xx")}
		// The writes landed in DB 9.
		out = append(out, a.do("SELECT", "9"), a.do("GET", "xx"), a.do("SELECT", "0"), a.do("EXISTS", "xx"))
		return out
	})
}

// TestSyncStream: after SYNC the connection carries a replication stream, not replies: the RDB
// payload (no trailing CRLF, preceded by newlines while Redis prepares it), then the write
// commands of every client, and it stays open (issue 11, item 3). The same for the EOF-marked
// diskless form redis-cli --rdb asks for.
func TestSyncStream(t *testing.T) {
	up := redistest.Start(t, "--repl-diskless-sync-delay", "0")
	p := startProxy(t, up)
	reset := func() {
		if r, err := up.Do("FLUSHALL"); err != nil || r != "+OK" {
			t.Fatalf("FLUSHALL: %q %v", r, err)
		}
	}
	sideBySide(t, up, p, reset, func(addr string) []string {
		a, b := dialRaw(t, addr), dialRaw(t, addr)
		b.do("SET", "before", "1")
		a.send(encode("SYNC"))
		rdb := readRDBBulk(t, a)
		out := []string{string(rdb[:9])} // "REDIS0010"
		b.do("SET", "k", "v")
		want := "*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
		out = append(out, string(readN(t, a, len(want))))
		b.do("SET", "k2", "v2")
		want = "*3\r\n$3\r\nSET\r\n$2\r\nk2\r\n$2\r\nv2\r\n"
		return append(out, string(readN(t, a, len(want))))
	})
	sideBySide(t, up, p, reset, func(addr string) []string {
		a := dialRaw(t, addr)
		out := []string{a.do("REPLCONF", "capa", "eof"), a.do("REPLCONF", "rdb-only", "1")}
		a.send(encode("SYNC"))
		data, _ := a.readAllUntilClose(10 * time.Second)
		data = bytes.TrimLeft(data, "\n")
		head, body, ok := bytes.Cut(data, []byte("\r\n"))
		if !ok || !bytes.HasPrefix(head, []byte("$EOF:")) || len(head) != 45 {
			return append(out, fmt.Sprintf("no EOF-marked payload: %q", clip(data)))
		}
		mark := head[5:]
		return append(out, "$EOF:<mark>", string(body[:9]), fmt.Sprint(bytes.HasSuffix(body, mark)))
	})
}

// readRDBBulk reads a SYNC's RDB payload: newlines, then $<len>\r\n and len bytes, no CRLF.
func readRDBBulk(t *testing.T, c *rawConn) []byte {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			t.Fatalf("SYNC: %v", err)
		}
		if line == "\n" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(line, "$"), "\r\n"))
		if err != nil {
			t.Fatalf("SYNC: unexpected %q", line)
		}
		return readN(t, c, n)
	}
}

// readN reads exactly n bytes.
func readN(t *testing.T, c *rawConn, n int) []byte {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c.br, b); err != nil {
		t.Fatalf("read %d bytes: %v (got %q)", n, err, clip(b))
	}
	return b
}

// busyRedis starts a Redis that reports a running script busy after 50 ms, with a function
// that never returns.
func busyRedis(t *testing.T) *redistest.Server {
	t.Helper()
	up := redistest.Start(t, "--busy-reply-threshold", "50")
	lib := "#!lua name=loop\nredis.register_function('test', function() while true do end end)"
	if r, err := up.Do("FUNCTION", "LOAD", lib); err != nil || r != "$4" {
		t.Fatalf("FUNCTION LOAD: %q %v", r, err)
	}
	return up
}

// waitBusy waits until Redis answers -BUSY on a direct connection (a script runs past the
// threshold).
func waitBusy(t *testing.T, up *redistest.Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, _ := up.Do("PING")
		if strings.HasPrefix(r, "-BUSY") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis not busy 10s after the script started: %q", r)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// normalizeStats hides the running time in FUNCTION STATS.
var statsDuration = regexp.MustCompile(`duration_ms\r\n:[0-9]+`)

// TestBusyScript: a client's script that runs until killed must not hold the clients that share
// its upstream connection: they get Redis' -BUSY at once, FUNCTION STATS and FUNCTION KILL (SCRIPT
// KILL for EVAL) reach Redis, and after the kill everything works (issue 11, item 1). Eight more
// clients on the default pool of two see the same.
func TestBusyScript(t *testing.T) {
	up := busyRedis(t)
	p := startProxy(t, up)
	for _, tc := range []struct {
		name   string
		script []string
		kill   string
	}{
		{"fcall", []string{"FCALL", "test", "0"}, "FUNCTION"},
		{"eval", []string{"EVAL", "while true do end", "0"}, "SCRIPT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sideBySide(t, up, p, func() {}, func(addr string) []string {
				// B, X, A: B and A get the same pooled connection (client ids 1 apart by 2).
				b, x, a := dialRaw(t, addr), dialRaw(t, addr), dialRaw(t, addr)
				for _, c := range []*rawConn{b, x, a} {
					c.do("PING")
				}
				others := make([]*rawConn, 8)
				for i := range others {
					others[i] = dialRaw(t, addr)
					others[i].do("PING")
				}
				a.send(encode(tc.script...))
				waitBusy(t, up)
				out := []string{b.do("PING")}
				if tc.kill == "FUNCTION" {
					out = append(out, statsDuration.ReplaceAllString(b.do("FUNCTION", "STATS"), "duration_ms\r\n:N"))
				}
				for _, o := range others {
					out = append(out, o.do("GET", "k"))
				}
				out = append(out, b.do(tc.kill, "KILL"), string(a.replies(1)), b.do("PING"), a.do("PING"))
				for _, o := range others {
					out = append(out, o.do("PING"))
				}
				return out
			})
		})
	}
}

// TestBusyMulti: MULTI is served while a script is busy, the commands queued meanwhile get
// -BUSY, and EXEC then aborts; the connection stays (issue 11, item 2).
func TestBusyMulti(t *testing.T) {
	up := busyRedis(t)
	p := startProxy(t, up)
	sideBySide(t, up, p, func() {}, func(addr string) []string {
		b, a, x := dialRaw(t, addr), dialRaw(t, addr), dialRaw(t, addr)
		out := []string{b.do("SELECT", "9"), a.do("PING"), x.do("PING")}
		a.send(encode("EVAL", "while true do end", "0"))
		waitBusy(t, up)
		out = append(out, b.do("MULTI"), b.do("INCR", "xx"), x.do("SCRIPT", "KILL"), string(a.replies(1)))
		return append(out, b.do("INCR", "xx"), b.do("EXEC"), b.do("GET", "xx"), b.do("PING"))
	})
}

// slowScript busy-loops for ms milliseconds of Redis' clock, then returns 1.
func slowScript(ms int) string {
	return fmt.Sprintf("local t=redis.call('TIME') while true do local n=redis.call('TIME') "+
		"if (n[1]-t[1])*1000000+(n[2]-t[2]) > %d then break end end return 1", ms*1000)
}

// TestSlowScriptsHoldNotFail: scripts that run long but end before Redis' busy threshold make
// the clients behind them wait, as on Redis; nothing is moved, failed or disconnected, also
// with a read timeout shorter than the scripts (review of the busy-script change).
func TestSlowScriptsHoldNotFail(t *testing.T) {
	up := redistest.Start(t)
	reg := prometheus.NewRegistry()
	p := startProxy(t, up, func(o *Options) {
		o.PoolSize, o.ReadTimeout, o.Registerer = 1, 300*time.Millisecond, reg
	})
	sideBySide(t, up, p, func() {}, func(addr string) []string {
		a, b := dialRaw(t, addr), dialRaw(t, addr)
		out := []string{a.do("SET", "k", "v"), b.do("PING")}
		a.send(encode("EVAL", slowScript(800), "0"))
		time.Sleep(100 * time.Millisecond)
		out = append(out, b.do("GET", "k"), string(a.replies(1)))
		return append(out, b.do("PING"))
	})
	// Several clients' slow scripts back to back on one pooled connection, a reader among them.
	addr := p.Addr().String()
	scripts := make([]*rawConn, 3)
	for i := range scripts {
		scripts[i] = dialRaw(t, addr)
		scripts[i].send(encode("EVAL", slowScript(100), "0"))
	}
	b := dialRaw(t, addr)
	for i := range 3 {
		if r := b.do("GET", "k"); r != "$1\r\nv\r\n" {
			t.Errorf("GET %d behind slow scripts: %q", i, r)
		}
	}
	for i, c := range scripts {
		if r := string(c.replies(1)); r != ":1\r\n" {
			t.Errorf("script client %d: %q", i, r)
		}
	}
	if got := ixCounter(t, reg, "sessionproxy_upstream_script_holds_total"); got != 0 {
		t.Errorf("%v shared connections given up behind scripts that ended before the busy threshold", got)
	}
}

// TestDeadSpare: a spare connection Redis closed while it idled (CLIENT KILL, an idle timeout)
// is not handed out: the client going dedicated gets a live one (review of the spare change).
func TestDeadSpare(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up)
	c := dialRaw(t, p.Addr().String())
	if r := c.do("PING"); r != "+PONG\r\n" {
		t.Fatal(r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for { // the pool's spare is dialed in the background
		r, _ := up.Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
		if r == ":2" || r == ":3" || time.Now().After(deadline) { // the shared one and the spare (+ the readiness check)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the FINs arrive
	got := []string{c.do("MULTI"), c.do("INCR", "x"), c.do("EXEC")}
	if want := []string{"+OK\r\n", "+QUEUED\r\n", "*1\r\n:1\r\n"}; strings.Join(got, "") != strings.Join(want, "") {
		t.Errorf("MULTI after the spare was killed: %q, want %q", got, want)
	}
}

// TestSyncNamedSpare: a named client's SYNC on a spare connection gets the replication stream
// only, not the reply to the proxy's own CLIENT SETNAME ahead of it.
func TestSyncNamedSpare(t *testing.T) {
	up := redistest.Start(t, "--repl-diskless-sync-delay", "0")
	p := startProxy(t, up)
	sideBySide(t, up, p, func() {}, func(addr string) []string {
		a := dialRaw(t, addr)
		out := []string{a.do("PING"), a.do("CLIENT", "SETNAME", "r1")}
		time.Sleep(100 * time.Millisecond) // the pool's spare is ready
		a.send(encode("SYNC"))
		return append(out, string(readRDBBulk(t, a)[:9]))
	})
}

// TestReadonlyHook: when Redis answers a shared-path command -READONLY (the master was demoted
// to a replica), the reply is relayed as it is and Options.OnReadonly runs, at most every
// 100 ms: sentinel mode then looks the master up at once.
func TestReadonlyHook(t *testing.T) {
	up, other := redistest.Start(t), redistest.Start(t)
	var calls atomic.Int32
	p := startProxy(t, up, func(o *Options) { o.OnReadonly = func() { calls.Add(1) } })
	c := dialRaw(t, p.Addr().String())
	if got := c.do("SET", "k", "v"); got != "+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	if _, err := up.Do("REPLICAOF", "127.0.0.1", strconv.Itoa(other.Port)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got := c.do("SET", "k", "w"); got != "-READONLY You can't write against a read only replica.\r\n" {
			t.Fatalf("SET on a replica: %q", got)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("OnReadonly ran %d times for three -READONLY within 100 ms, want 1", n)
	}
	if got := c.do("GET", "k"); got != "$1\r\nv\r\n" && got != "$-1\r\n" {
		t.Errorf("GET on the replica: %q", got)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("OnReadonly ran for a read: %d calls", n)
	}
}
