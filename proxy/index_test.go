package proxy

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/syncbuf"
)

func TestSeedAppIndexed(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up)
	c := dialRaw(t, p.Addr().String())
	steps := []struct{ cmd, want string }{
		{"HMSET session:10 userid 100 name alice", "+OK\r\n"},
		{"EXPIRE session:10 1800", ":1\r\n"},
		{"SMEMBERS user:100", "*1\r\n$2\r\n10\r\n"},
		{"HSET session:11 userid 100", ":1\r\n"},
		{"SESSIONS.LIST 100", "*2\r\n$2\r\n10\r\n$2\r\n11\r\n"},
		{"SESSIONS.COUNT 100", ":2\r\n"},
		{"HSET session:11 userid 200", ":0\r\n"},
		{"SMEMBERS user:200", "*1\r\n$2\r\n11\r\n"},
		{"SMEMBERS user:100", "*1\r\n$2\r\n10\r\n"},
		{"DEL session:10 other", ":1\r\n"},
		{"SMEMBERS user:100", "*0\r\n"},
		{"HSET strk a b", ":1\r\n"},
		{"SET strkey x", "+OK\r\n"},
		{"HSET strkey userid 1", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"},
		{"SET session:12 x", "+OK\r\n"},
		{"HSET session:12 userid 5", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"},
		{"HSET session:12", "-ERR wrong number of arguments for 'hset' command\r\n"},
		{"SESSIONS.REVOKE 200", ":1\r\n"},
		{"EXISTS session:11", ":0\r\n"},
		{"SESSIONS.LIST 200", "*0\r\n"},
	}
	for _, st := range steps {
		if got := c.do(words(st.cmd)...); got != st.want {
			t.Errorf("%s: got %q want %q", st.cmd, got, st.want)
		}
	}
}

func TestConnectRedisJSON(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up)
	c := dialRaw(t, p.Addr().String())
	if got := c.do("SET", "sess:abc", `{"cookie":{"maxAge":86400},"passport":{"user":"42"}}`, "EX", "86400"); got != "+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	if got := c.do("SMEMBERS", "juser:42"); got != "*1\r\n$3\r\nabc\r\n" {
		t.Fatalf("SMEMBERS juser:42: %q", got)
	}
	if got := c.do("ZSCORE", "sessionproxy:deadlines", "sess:abc"); len(got) < 5 {
		t.Fatalf("ledger: %q", got)
	}
	if got := c.do("SET", "sess:abc", `not json`, "KEEPTTL"); got != "+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	if got := c.do("SMEMBERS", "juser:42"); got != "*0\r\n" {
		t.Fatalf("after non-JSON: %q", got)
	}
}

// TestMergedSessionWrites: consecutive session writes of one pipeline run as one apply_many
// call; the client still gets one exact reply per command, errors included.
func TestMergedSessionWrites(t *testing.T) {
	up := redistest.Start(t)
	direct := redistest.Start(t)
	p := startProxy(t, up)
	var batch []byte
	for _, cmd := range []string{
		"SET session:9 notahash",
		"HSET session:1 userid 7 a b",
		"HSET session:2 userid 7",
		"HSET session:9 userid 7",
		"HSETNX session:3 userid 8",
		"GET session:9",
		"HMSET session:4 userid 8",
		"DEL session:2 session:4",
		"EXPIRE session:1 100",
		"HDEL session:3 userid",
	} {
		batch = append(batch, encode(words(cmd)...)...)
	}
	pc, dc := dialRaw(t, p.Addr().String()), dialRaw(t, direct.Addr())
	pc.send(batch)
	dc.send(batch)
	if got, want := string(pc.replies(10)), string(dc.replies(10)); got != want {
		t.Fatalf("replies differ:\nproxy  %q\ndirect %q", got, want)
	}
	for _, tc := range []struct{ cmd, want string }{
		{"SMEMBERS user:7", "*1\r\n$1\r\n1\r\n"},
		{"SMEMBERS user:8", "*0\r\n"},
		{"HGETALL sessionproxy:owners", "*2\r\n$9\r\nsession:1\r\n$1\r\n7\r\n"},
		{"ZCARD sessionproxy:deadlines", ":1\r\n"},
	} {
		if got := pc.do(words(tc.cmd)...); got != tc.want {
			t.Errorf("%s: got %q want %q", tc.cmd, got, tc.want)
		}
	}
}

// TestIndexUnindexedCounted: a session write that names an owner the global-zset layout cannot
// score succeeds as the plain command would, and is counted as unindexed, with a log line (at
// most one a second), on the shared and the dedicated path.
func TestIndexUnindexedCounted(t *testing.T) {
	up := redistest.Start(t)
	reg := prometheus.NewRegistry()
	var logs syncbuf.Buffer
	p := startProxy(t, up, func(o *Options) {
		o.Registerer = reg
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	c := dialRaw(t, p.Addr().String())
	const metric = "sessionproxy_index_unindexed_writes_total"
	steps := []struct {
		cmd, want string
		count     float64
	}{
		{"HSET gsess:a uid 7", ":1\r\n", 0},
		{"HSET gsess:b uid abc", ":1\r\n", 1},
		{"HSET gsess:a uid 7x", ":0\r\n", 2},
		{"ZRANGE idx-session-uid 0 -1", "*0\r\n", 2}, // gsess:a left the index with its owner
		{"HSET gsess:a uid 8", ":0\r\n", 2},
		{"MULTI", "+OK\r\n", 2},
		{"HSET gsess:c uid 1.5", "+QUEUED\r\n", 3},
		{"EXEC", "*1\r\n:1\r\n", 3},
		{"ZRANGE idx-session-uid 0 -1 WITHSCORES", "*2\r\n$7\r\ngsess:a\r\n$1\r\n8\r\n", 3},
	}
	for _, st := range steps {
		if got := c.do(words(st.cmd)...); got != st.want {
			t.Errorf("%s: got %q want %q", st.cmd, got, st.want)
		}
		if got := ixCounter(t, reg, metric); got != st.count {
			t.Errorf("after %s: %s = %v, want %v", st.cmd, metric, got, st.count)
		}
	}
	if n := strings.Count(logs.String(), "session owner is not a number"); n != 1 {
		t.Errorf("%d log lines for 3 unindexed writes within a second, want 1:\n%s", n, logs.String())
	}
}

// TestIndexACLUsers: session writes run as the client's ACL user. One that may not run the
// index scripts (no @scripting) or not write the index keys (keys limited to session:*) gets
// the replies Redis gives it directly, inside MULTI too; its writes pass plain, unindexed,
// and are counted. A user with the rights is indexed as usual.
func TestIndexACLUsers(t *testing.T) {
	up := redistest.Start(t)
	ctl := dialRaw(t, up.Addr())
	for _, u := range []string{
		"ACL SETUSER noscript on >pw ~* &* +@all -@scripting",
		"ACL SETUSER sessonly on >pw ~session:* &* +@all",
		"ACL SETUSER full on >pw ~* &* +@all",
		"ACL SETUSER noeval on >pw ~* &* +@all -eval",
		"ACL SETUSER noread on >pw ~session:* %W~sessionproxy:* %W~user:* &* +@all",
	} {
		if got := ctl.do(words(u)...); got != "+OK\r\n" {
			t.Fatalf("%s: %q", u, got)
		}
	}
	reg := prometheus.NewRegistry()
	p := startProxy(t, up, func(o *Options) { o.Registerer = reg })
	const metric = "sessionproxy_index_unindexed_writes_total"
	for _, tc := range []struct {
		user      string
		indexed   bool    // the first write, on the shared path, is indexed
		unindexed float64 // writes counted unindexed
	}{
		{"noscript", false, 4}, {"sessonly", false, 4}, {"noread", false, 4}, {"full", true, 0},
		// EVALSHA but no EVAL: indexed on the shared path, plain on its own connection: the
		// write in MULTI and the one after it (the client keeps that connection).
		{"noeval", true, 2},
	} {
		t.Run(tc.user, func(t *testing.T) {
			before := ixCounter(t, reg, metric)
			pc, dc := dialRaw(t, p.Addr().String()), dialRaw(t, up.Addr())
			cmds := func(key string) [][]string {
				return [][]string{
					{"AUTH", tc.user, "pw"},
					{"HSET", key, "userid", "9"},
					{"EXPIRE", key, "100"},
					{"MULTI"}, {"HSET", key, "userid", "9", "f", "v"}, {"EXEC"},
					{"HSET", key, "userid", "9"},
				}
			}
			pk, dk := "session:"+tc.user, "session:"+tc.user+"-direct"
			pcmds, dcmds := cmds(pk), cmds(dk)
			for i := range pcmds {
				if want, got := dc.do(dcmds[i]...), pc.do(pcmds[i]...); got != want {
					t.Errorf("%v: proxy %q, redis %q", pcmds[i], got, want)
				}
			}
			wantMember, wantCount := ":0\r\n", before+tc.unindexed
			if tc.indexed {
				wantMember = ":1\r\n"
			}
			if got := ctl.do("SISMEMBER", "user:9", tc.user); got != wantMember {
				t.Errorf("SISMEMBER user:9 %s = %q, want %q", tc.user, got, wantMember)
			}
			if got := ixCounter(t, reg, metric); got != wantCount {
				t.Errorf("%s = %v, want %v", metric, got, wantCount)
			}
		})
	}

	// The same through HELLO ... AUTH (its reply carries the connection id: not compared).
	hc := dialRaw(t, p.Addr().String())
	if got := hc.do("HELLO", "2", "AUTH", "noscript", "pw"); !strings.HasPrefix(got, "*14\r\n") {
		t.Fatalf("HELLO 2 AUTH noscript: %q", got)
	}
	if got := hc.do("HSET", "session:hello", "userid", "9"); got != ":1\r\n" {
		t.Errorf("HSET after HELLO AUTH as noscript: %q, want :1", got)
	}
	if got := ctl.do("SISMEMBER", "user:9", "hello"); got != ":0\r\n" {
		t.Errorf("SISMEMBER user:9 hello = %q, want :0 (passed plain)", got)
	}
}
