package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// dialFrom is dialRESP from a given loopback source address: 127.0.0.2 is a client that is not
// on Redis' loopback list (127.0.0.1, ::1), as a remote host would be.
func dialFrom(t *testing.T, src, addr string) *respConn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &respConn{t: t, nc: nc, br: bufio.NewReaderSize(nc, 64<<10)}
}

// TestClientsNeverBorrowTheProxysCredentials: with upstream.password set (Redis requires a
// password) and no clients.password, a client that has not sent AUTH gets exactly what a direct
// client of Redis gets before AUTH (-NOAUTH), not the proxy's access; wrong and right passwords
// are Redis' to judge, as directly; the proxy's own commands that run as its user are refused to
// it. Protected mode (auto) is off: Redis asks for a password.
func TestClientsNeverBorrowTheProxysCredentials(t *testing.T) {
	up := redistest.Start(t, "--requirepass", "redispw")
	up.Auth = []string{"redispw"}
	p := startProxy(t, up.Addr(), "SESSIONPROXY_UPSTREAM_PASSWORD=redispw")
	steps := [][]string{
		{"PING"}, {"CONFIG", "GET", "requirepass"}, {"GET", "k"}, {"HSET", "session:1", "userid", "7"},
		{"SUBSCRIBE", "ch"}, {"WATCH", "k"}, {"BLPOP", "l", "1"},
		{"HELLO", "3"}, {"AUTH", "wrong"}, {"AUTH", "default", "wrong"}, {"PING"},
		{"AUTH", "redispw"}, {"PING"}, {"SET", "k", "v"}, {"GET", "k"}, {"CONFIG", "GET", "requirepass"},
		{"RESET"}, {"GET", "k"},
		// On a connection of its own (SUBSCRIBE), RESET logs out too.
		{"AUTH", "redispw"}, {"SUBSCRIBE", "ch"}, {"RESET"}, {"GET", "k"}, {"CONFIG", "GET", "requirepass"},
	}
	direct, proxied := dialRESP(t, up.Addr()), dialRESP(t, p.Addr)
	for _, st := range steps {
		d, g := direct.do(st...), proxied.do(st...)
		if d != g {
			t.Errorf("%q: proxy %q, Redis %q", st, clip(g), clip(d))
		}
	}
	// Redis' limits for unauthenticated clients, as Redis applies them; and an AUTH followed in
	// the same write by a command beyond them.
	for _, in := range []string{"*11\r\n", "*1\r\n$16385\r\n"} {
		d, g := dialRESP(t, up.Addr()), dialRESP(t, p.Addr)
		d.send([]byte(in))
		g.send([]byte(in))
		dr, _ := d.reply(2 * time.Second)
		gr, _ := g.reply(2 * time.Second)
		if dr != gr || !strings.Contains(gr, "unauthenticated") {
			t.Errorf("%q before AUTH: proxy %q, Redis %q", in, gr, dr)
		}
		g.expectClosed(2 * time.Second)
	}
	big := strings.Repeat("x", 20000)
	for _, addr := range []string{up.Addr(), p.Addr} {
		c := dialRESP(t, addr)
		c.send(append(encode("AUTH", "redispw"), encode("SET", "big", big)...))
		for _, want := range []string{"+OK\r\n", "+OK\r\n"} {
			if got, err := c.reply(2 * time.Second); err != nil || got != want {
				t.Errorf("%s: AUTH and a 20 KB SET in one write: %q %v", addr, got, err)
			}
		}
	}
	if got := dialRESP(t, p.Addr).do("SESSIONS.REINDEX"); !strings.HasPrefix(got, "-NOPERM") {
		t.Errorf("SESSIONS.REINDEX before AUTH: %q, want -NOPERM", got)
	}
	// Not protected: a client from another address gets Redis' own -NOAUTH, not -DENIED.
	if !waitFor(5*time.Second, func() bool {
		return dialFrom(t, "127.0.0.2", p.Addr).do("PING") == "-NOAUTH Authentication required.\r\n"
	}) {
		t.Errorf("from 127.0.0.2: %q", dialFrom(t, "127.0.0.2", p.Addr).do("PING"))
	}
}

// TestClientPassword: clients.password is asked as Redis' requirepass: -NOAUTH for everything
// but AUTH, HELLO ... AUTH and QUIT; -WRONGPASS for a wrong one; then the client runs as the
// proxy's user; RESET asks again.
func TestClientPassword(t *testing.T) {
	up := redistest.Start(t, "--requirepass", "redispw")
	up.Auth = []string{"redispw"}
	p := startProxy(t, up.Addr(), "SESSIONPROXY_UPSTREAM_PASSWORD=redispw", "SESSIONPROXY_CLIENTS_PASSWORD=clientpw")
	c := dialRESP(t, p.Addr)
	for _, st := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"PING"}, "-NOAUTH Authentication required.\r\n"},
		{[]string{"CONFIG", "GET", "requirepass"}, "-NOAUTH Authentication required.\r\n"},
		{[]string{"HELLO", "3"}, "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n"},
		{[]string{"AUTH", "redispw"}, "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{[]string{"AUTH", "default", "nope"}, "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{[]string{"AUTH"}, "-ERR wrong number of arguments for 'auth' command\r\n"},
		{[]string{"GET", "k"}, "-NOAUTH Authentication required.\r\n"},
		{[]string{"AUTH", "clientpw"}, "+OK\r\n"},
		{[]string{"PING"}, "+PONG\r\n"},
		{[]string{"SET", "k", "v"}, "+OK\r\n"},
		{[]string{"GET", "k"}, "$1\r\nv\r\n"},
		{[]string{"RESET"}, "+RESET\r\n"},
		{[]string{"GET", "k"}, "-NOAUTH Authentication required.\r\n"},
		{[]string{"AUTH", "default", "clientpw"}, "+OK\r\n"},
		{[]string{"GET", "k"}, "$1\r\nv\r\n"},
	} {
		if got := c.do(st.cmd...); got != st.want {
			t.Errorf("%q: %q, want %q", st.cmd, clip(got), st.want)
		}
	}
	// On a connection of its own (SUBSCRIBE) too: RESET logs out, AUTH logs in again.
	sub := dialRESP(t, p.Addr)
	for _, st := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"AUTH", "clientpw"}, "+OK\r\n"},
		{[]string{"SUBSCRIBE", "ch"}, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"},
		{[]string{"RESET"}, "+RESET\r\n"},
		{[]string{"GET", "k"}, "-NOAUTH Authentication required.\r\n"},
		{[]string{"AUTH", "nope"}, "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{[]string{"AUTH", "clientpw"}, "+OK\r\n"},
		{[]string{"GET", "k"}, "$1\r\nv\r\n"},
	} {
		if got := sub.do(st.cmd...); got != st.want {
			t.Errorf("own connection: %q: %q, want %q", st.cmd, clip(got), st.want)
		}
	}
	h := dialRESP(t, p.Addr)
	if got := h.do("HELLO", "3", "AUTH", "default", "clientpw"); !strings.HasPrefix(got, "%7\r\n") {
		t.Errorf("HELLO 3 AUTH default clientpw: %q", clip(got))
	}
	if got := h.do("GET", "k"); got != "$1\r\nv\r\n" {
		t.Errorf("GET after HELLO AUTH: %q", got)
	}
	if got := dialRESP(t, p.Addr).do("HELLO", "3", "AUTH", "default", "bad"); got != "-WRONGPASS invalid username-password pair or user is disabled.\r\n" {
		t.Errorf("HELLO with a wrong password: %q", got)
	}
	// A malformed HELLO ... AUTH gets Redis' own syntax error, as from Redis before AUTH.
	if got, want := dialRESP(t, p.Addr).do("HELLO", "3", "AUTH", "default"), dialRESP(t, up.Addr()).do("HELLO", "3", "AUTH", "default"); got != want {
		t.Errorf("HELLO 3 AUTH default: %q, Redis %q", got, want)
	}
	// A pipeline: AUTH first, the rest run.
	q := dialRESP(t, p.Addr)
	q.send(append(append(encode("AUTH", "clientpw"), encode("GET", "k")...), encode("PING")...))
	for _, want := range []string{"+OK\r\n", "$1\r\nv\r\n", "+PONG\r\n"} {
		if got, err := q.reply(2 * time.Second); err != nil || got != want {
			t.Errorf("pipelined: %q %v, want %q", got, err, want)
		}
	}
	// A password is asked: protected mode (auto) is off.
	if got := dialFrom(t, "127.0.0.2", p.Addr).do("PING"); got != "-NOAUTH Authentication required.\r\n" {
		t.Errorf("from 127.0.0.2: %q", got)
	}
}

// TestProtectedMode: nothing asks clients for a password (no clients.password, Redis open):
// only 127.0.0.1 and ::1 may connect, anyone else gets -DENIED and the connection closes, as
// with Redis' protected mode; clients.protected_mode: no lets them in.
func TestProtectedMode(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up.Addr())
	if got := dialRESP(t, p.Addr).do("PING"); got != "+PONG\r\n" {
		t.Fatalf("from 127.0.0.1: %q", got)
	}
	c := dialFrom(t, "127.0.0.2", p.Addr)
	got, err := c.reply(2 * time.Second)
	if err != nil || !strings.HasPrefix(got, "-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface.") {
		t.Fatalf("from 127.0.0.2: %q %v, want -DENIED", clip(got), err)
	}
	c.expectClosed(2 * time.Second)
	m := scrapeMetrics(t, p.HTTP)
	if n := m[`sessionproxy_client_rejected_total{reason="protected_mode"}`]; n != 1 {
		t.Errorf("rejected for protected mode: %v, want 1", n)
	}
	open := startProxy(t, up.Addr(), "SESSIONPROXY_CLIENTS_PROTECTED_MODE=no")
	if got := dialFrom(t, "127.0.0.2", open.Addr).do("PING"); got != "+PONG\r\n" {
		t.Errorf("protected_mode no, from 127.0.0.2: %q", got)
	}
}

// TestMaxDedicated: clients on upstream connections of their own (WATCH here) are bounded by
// limits.max_dedicated: beyond it the command gets an error, the client stays and Redis keeps
// its free connections; when one of them leaves, the next gets its connection.
func TestMaxDedicated(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up.Addr(), "SESSIONPROXY_LIMITS_MAX_DEDICATED=3")
	var held []*respConn
	for range 3 {
		c := dialRESP(t, p.Addr)
		if got := c.do("WATCH", "k"); got != "+OK\r\n" {
			t.Fatalf("WATCH within the bound: %q", got)
		}
		held = append(held, c)
	}
	extra := dialRESP(t, p.Addr)
	want := "-ERR max number of clients on their own upstream connections reached (limits.max_dedicated)\r\n"
	if got := extra.do("WATCH", "k"); got != want {
		t.Fatalf("WATCH beyond the bound: %q", got)
	}
	if got := extra.do("PING"); got != "+PONG\r\n" {
		t.Fatalf("the refused client's next command: %q", got)
	}
	if n := scrapeMetrics(t, p.HTTP)["sessionproxy_upstream_dedicated_refused_total"]; n != 1 {
		t.Errorf("refused: %v, want 1", n)
	}
	held[0].close()
	if !waitFor(5*time.Second, func() bool { return extra.do("WATCH", "k") == "+OK\r\n" }) {
		t.Fatal("no connection of its own after another client left")
	}
}

// TestQueryBufferLimit: a command with a bulk bigger than Redis' client-query-buffer-limit is
// ended by the proxy as Redis ends it (the connection closes, no reply), before it reaches a
// shared upstream connection, which Redis would close under every client on it.
func TestQueryBufferLimit(t *testing.T) {
	up := redistest.Start(t, "--client-query-buffer-limit", "1mb")
	p := startProxy(t, up.Addr())
	big := encode("SET", "big", strings.Repeat("x", 2<<20))
	// Redis itself: the connection closes without a reply.
	d := dialRESP(t, up.Addr())
	_, _ = d.nc.Write(big)
	d.expectClosed(5 * time.Second)
	// Another client of the proxy, on the shared connection, all along.
	other := dialRESP(t, p.Addr)
	if got := other.do("SET", "k", "v"); got != "+OK\r\n" {
		t.Fatal(got)
	}
	// The proxy reads the limit at start: wait for the first connection it ends.
	if !waitFor(5*time.Second, func() bool {
		c := dialRESP(t, p.Addr)
		_, _ = c.nc.Write(big) // the proxy may close before it has all of it
		got, err := c.reply(2 * time.Second)
		if err == nil && got == "+OK\r\n" {
			return false // accepted before the proxy knew the limit
		}
		if err == nil {
			t.Fatalf("a reply to the oversized command: %q", clip(got))
		}
		return true
	}) {
		t.Fatal("the oversized command was never refused")
	}
	for range 3 {
		if got := other.do("GET", "k"); got != "$1\r\nv\r\n" {
			t.Fatalf("the other client after the refusal: %q", got)
		}
	}
	// Redis logs each client it closes for its query buffer: the direct one only.
	log, err := os.ReadFile(filepath.Join(up.Dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "reached max query buffer length"); n != 1 {
		t.Errorf("Redis closed %d clients for their query buffer, want 1 (the direct one):\n%s", n, log)
	}
}

// TestClientPasswordAlone: clients.password in front of a Redis that asks for none, so the
// proxy's check is all that stands between a client and Redis: nothing a client sends before
// its AUTH reaches Redis, not even after a QUIT in the same write.
func TestClientPasswordAlone(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up.Addr(), "SESSIONPROXY_CLIENTS_PASSWORD=clientpw")
	c := dialRESP(t, p.Addr)
	c.send(append(append(encode("SET", "before-auth", "1"), encode("QUIT")...), encode("SET", "after-quit", "1")...))
	for _, want := range []string{"-NOAUTH Authentication required.\r\n", "+OK\r\n"} {
		if got, err := c.reply(2 * time.Second); err != nil || got != want {
			t.Errorf("%q %v, want %q", got, err, want)
		}
	}
	c.expectClosed(2 * time.Second)
	for _, k := range []string{"before-auth", "after-quit"} {
		if got, err := up.DoText("EXISTS", k); err != nil || got != "0" {
			t.Errorf("%s reached Redis: EXISTS = %s %v", k, got, err)
		}
	}
	// Before AUTH, Redis' limits for unauthenticated clients apply to the proxy's password too.
	if got := dialRESP(t, p.Addr).do("SET", "k", strings.Repeat("x", 16385)); got != "-ERR Protocol error: unauthenticated bulk length\r\n" {
		t.Errorf("a 16 KiB+1 bulk before AUTH: %q", clip(got))
	}
	// RESET in a batch: what follows it waits for AUTH again.
	r := dialRESP(t, p.Addr)
	r.send(append(append(append(encode("AUTH", "clientpw"), encode("RESET")...), encode("SET", "after-reset", "1")...), encode("PING")...))
	for _, want := range []string{"+OK\r\n", "+RESET\r\n", "-NOAUTH Authentication required.\r\n", "-NOAUTH Authentication required.\r\n"} {
		if got, err := r.reply(2 * time.Second); err != nil || got != want {
			t.Errorf("%q %v, want %q", got, err, want)
		}
	}
	if got, err := up.DoText("EXISTS", "after-reset"); err != nil || got != "0" {
		t.Errorf("after-reset reached Redis: EXISTS = %s %v", got, err)
	}
}
