package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestDenyCommands: denied commands and subcommands get Redis' answer to a command renamed away,
// with the proxy's reason in the name, in order with the other replies, on the shared path and
// in a transaction, which Redis then discards as it does after a command it refused to queue.
func TestDenyCommands(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up, func(o *Options) { o.DenyCommands = []string{"FLUSHALL", "config|set", "debug", "replicaof"} })
	c := dialRaw(t, s.Addr().String())
	denied := func(name, args string) string {
		return "-ERR unknown command '" + name + " (denied by the proxy: clients.deny_commands)', with args beginning with: " + args + "\r\n"
	}
	c.send(append(append(encode("SET", "k", "v"), encode("flushall", "async")...), encode("GET", "k")...))
	if got, want := string(c.replies(3)), "+OK\r\n"+denied("FLUSHALL", "'async' ")+"$1\r\nv\r\n"; got != want {
		t.Errorf("pipeline: got %q, want %q", got, want)
	}
	if got := c.do("CONFIG", "SET", "maxmemory", "0"); got != denied("CONFIG", "'SET' 'maxmemory' '0' ") {
		t.Errorf("CONFIG SET: %q", got)
	}
	if got := c.do("SLAVEOF", "NO", "ONE"); got != denied("SLAVEOF", "'NO' 'ONE' ") {
		t.Errorf("SLAVEOF, an alias of the denied REPLICAOF: %q", got)
	}
	if got := c.do("CONFIG", "GET", "maxmemory"); got != "*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n" {
		t.Errorf("CONFIG GET (not denied): %q", got)
	}
	c.send(append(append(append(encode("MULTI"), encode("SET", "k", "w")...), encode("DEBUG", "SLEEP", "0")...), encode("EXEC")...))
	want := "+OK\r\n+QUEUED\r\n" + denied("DEBUG", "'SLEEP' '0' ") + "-EXECABORT Transaction discarded because of previous errors.\r\n"
	if got := string(c.replies(4)); got != want {
		t.Errorf("MULTI: got %q, want %q", got, want)
	}
	if got := c.do("GET", "k"); got != "$1\r\nv\r\n" {
		t.Errorf("the discarded transaction ran: GET k = %q", got)
	}
	for _, bad := range []string{"NOPE", "CONFIG|", "|SET", "GET|foo"} {
		_, err := New(Options{Listen: "127.0.0.1:0", Upstream: up.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second,
			PoolSize: 1, MaxClients: 1, Schema: testSchema(t), DenyCommands: []string{bad}})
		if err == nil || !strings.Contains(err.Error(), "is not a Redis command") {
			t.Errorf("deny %q: %v", bad, err)
		}
	}
}

// TestRenameCommands: Redis' rename-command for clients. The new name runs the command, with
// the reply Redis gives the command itself (in a pipeline, in a transaction); the old name gets
// the answer to a command renamed away, naming the setting; a name alone takes the command away.
func TestRenameCommands(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up, func(o *Options) { o.RenameCommands = []string{"CONFIG adminCfg", "DEBUG"} })
	c := dialRaw(t, s.Addr().String())
	renamed := func(name, args string) string {
		return "-ERR unknown command '" + name + " (renamed by the proxy: clients.rename_commands)', with args beginning with: " + args + "\r\n"
	}
	direct := dialRaw(t, up.Addr())
	want := direct.do("CONFIG", "GET", "maxmemory")
	c.send(append(append(encode("PING"), encode("ADMINCFG", "GET", "maxmemory")...), encode("config", "get", "maxmemory")...))
	if got := string(c.replies(3)); got != "+PONG\r\n"+want+renamed("CONFIG", "'get' 'maxmemory' ") {
		t.Errorf("pipeline: %q", got)
	}
	if got := c.do("DEBUG", "SLEEP", "0"); got != renamed("DEBUG", "'SLEEP' '0' ") {
		t.Errorf("DEBUG, renamed away: %q", got)
	}
	c.send(append(append(encode("MULTI"), encode("admincfg", "GET", "maxmemory")...), encode("EXEC")...))
	if got := string(c.replies(3)); got != "+OK\r\n+QUEUED\r\n*1\r\n"+want {
		t.Errorf("in MULTI: %q", got)
	}
	for _, bad := range [][]string{{"NOSUCH x"}, {"CONFIG GET"}, {"CONFIG a", "DEBUG a"}, {"CONFIG|GET x"}} {
		if _, err := s.table.denyList(nil, bad); err == nil {
			t.Errorf("renames %q taken", bad)
		}
	}
}
