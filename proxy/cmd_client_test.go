package proxy

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/syncbuf"
)

// clientLines splits a CLIENT LIST/INFO bulk reply into its lines' fields, by id.
func clientLines(t *testing.T, reply string) map[string]map[string]string {
	t.Helper()
	if !strings.HasPrefix(reply, "$") {
		t.Fatalf("not a bulk reply: %q", reply)
	}
	body := reply[strings.Index(reply, "\r\n")+2 : len(reply)-2]
	out := make(map[string]map[string]string)
	for _, l := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		if l == "" {
			continue
		}
		f := make(map[string]string)
		for _, kv := range strings.Split(l, " ") {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		out[f["id"]] = f
	}
	return out
}

// keys is the field names of a CLIENT LIST line, in order.
func keys(line string) []string {
	var out []string
	for _, kv := range strings.Fields(line) {
		k, _, _ := strings.Cut(kv, "=")
		out = append(out, k)
	}
	return out
}

// intReply strips ":...\r\n".
func intReply(t *testing.T, r string) string {
	t.Helper()
	if !strings.HasPrefix(r, ":") {
		t.Fatalf("not an integer reply: %q", r)
	}
	return strings.TrimSuffix(r[1:], "\r\n")
}

// expectClosed checks that the proxy closed c.
func expectClosed(t *testing.T, c *rawConn) {
	t.Helper()
	out, err := c.readAllUntilClose(5 * time.Second)
	if err != io.EOF {
		t.Fatalf("connection not closed: %v (read %q)", err, out)
	}
}

// TestClientListAndInfo: CLIENT ID/INFO/LIST describe the proxy's clients: their proxy IDs,
// names, addresses, in Redis 7.0's field order.
func TestClientListAndInfo(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up)
	a, b := dialRaw(t, s.Addr().String()), dialRaw(t, s.Addr().String())
	if r := a.do("CLIENT", "SETNAME", "foobar"); r != "+OK\r\n" {
		t.Fatal(r)
	}
	aID, bID := intReply(t, a.do("CLIENT", "ID")), intReply(t, b.do("client", "id"))
	if aID == bID {
		t.Fatalf("same id %s", aID)
	}
	info := a.do("CLIENT", "INFO")
	ai := clientLines(t, info)[aID]
	if ai == nil || ai["name"] != "foobar" || ai["cmd"] != "client|info" || ai["flags"] != "N" ||
		ai["addr"] != a.nc.LocalAddr().String() || ai["laddr"] != s.Addr().String() || ai["user"] != "default" {
		t.Fatalf("CLIENT INFO: %q", info)
	}
	// The same fields, in the same order, as Redis' own.
	direct := dialRaw(t, up.Addr())
	want := direct.do("CLIENT", "INFO")
	if got, w := keys(info[strings.Index(info, "\r\n")+2:]), keys(want[strings.Index(want, "\r\n")+2:]); strings.Join(got, " ") != strings.Join(w, " ") {
		t.Fatalf("fields %v, Redis %v", got, w)
	}

	list := clientLines(t, b.do("CLIENT", "LIST"))
	if len(list) != 2 || list[aID]["name"] != "foobar" || list[aID]["cmd"] != "client|info" ||
		list[bID]["name"] != "" || list[bID]["cmd"] != "client|list" {
		t.Fatalf("CLIENT LIST: %v", list)
	}
	list = clientLines(t, b.do("CLIENT", "LIST", "ID", aID, "12345"))
	if len(list) != 1 || list[aID] == nil {
		t.Fatalf("CLIENT LIST ID: %v", list)
	}

	// RESP3: a verbatim string, as from Redis.
	a.do("HELLO", "3")
	if r := a.do("CLIENT", "INFO"); !strings.HasPrefix(r, "=") || !strings.Contains(r, "\r\ntxt:id="+aID+" ") ||
		!strings.Contains(r, " resp=3\n") {
		t.Fatalf("RESP3 CLIENT INFO: %q", r)
	}
}

// TestClientDedicated: a client on its own upstream connection keeps its proxy ID, and shows
// that connection's state (MULTI, subscriptions) from Redis' entry.
func TestClientDedicated(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up)
	a, b, sub := dialRaw(t, s.Addr().String()), dialRaw(t, s.Addr().String()), dialRaw(t, s.Addr().String())
	aID, subID := intReply(t, a.do("CLIENT", "ID")), intReply(t, sub.do("CLIENT", "ID"))
	if r := a.do("MULTI"); r != "+OK\r\n" {
		t.Fatal(r)
	}
	if r := a.do("CLIENT", "ID"); r != "+QUEUED\r\n" {
		t.Fatal(r)
	}
	if l := clientLines(t, b.do("CLIENT", "LIST"))[aID]; l["flags"] != "x" || l["multi"] != "1" {
		t.Fatalf("client in MULTI: %v", l)
	}
	if r := a.do("EXEC"); r != "*1\r\n:"+aID+"\r\n" {
		t.Fatalf("EXEC: %q", r)
	}
	if r := a.do("CLIENT", "SETNAME", "later"); r != "+OK\r\n" {
		t.Fatal(r)
	}
	if l := clientLines(t, a.do("CLIENT", "INFO"))[aID]; l["name"] != "later" || l["flags"] != "N" {
		t.Fatalf("CLIENT INFO on the dedicated path: %v", l)
	}
	defer func() { // killing itself on the dedicated path: the reply, then the connection closes
		a.send(append(encode("CLIENT", "KILL", "ID", aID, "SKIPME", "no"), encode("PING")...))
		out, err := a.readAllUntilClose(5 * time.Second)
		if string(out) != ":1\r\n" || err != io.EOF {
			t.Fatalf("dedicated KILL self: %q, %v", out, err)
		}
	}()

	sub.send(encode("SUBSCRIBE", "ch"))
	sub.replies(1)
	list := clientLines(t, b.do("CLIENT", "LIST", "TYPE", "pubsub"))
	if len(list) != 1 || list[subID]["flags"] != "P" || list[subID]["sub"] != "1" {
		t.Fatalf("CLIENT LIST TYPE pubsub: %v", list)
	}
	if list = clientLines(t, b.do("CLIENT", "LIST", "TYPE", "normal")); len(list) != 2 || list[subID] != nil {
		t.Fatalf("CLIENT LIST TYPE normal: %v", list)
	}
	if r := b.do("CLIENT", "KILL", "TYPE", "pubsub"); r != ":1\r\n" {
		t.Fatalf("CLIENT KILL TYPE pubsub: %q", r)
	}
	expectClosed(t, sub)
}

// TestClientKill: CLIENT KILL by ID, ADDR and the old form closes the proxy's clients.
func TestClientKill(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up)
	addr := s.Addr().String()
	a, b, c, d := dialRaw(t, addr), dialRaw(t, addr), dialRaw(t, addr), dialRaw(t, addr)
	bID := intReply(t, b.do("CLIENT", "ID"))
	aID := intReply(t, a.do("CLIENT", "ID"))

	if r := a.do("CLIENT", "KILL", "ID", bID); r != ":1\r\n" {
		t.Fatalf("KILL ID: %q", r)
	}
	expectClosed(t, b)
	if r := a.do("CLIENT", "KILL", "ID", bID); r != ":0\r\n" {
		t.Fatalf("KILL ID again: %q", r)
	}
	c.do("PING")
	if r := a.do("CLIENT", "KILL", "ADDR", c.nc.LocalAddr().String(), "LADDR", addr); r != ":1\r\n" {
		t.Fatalf("KILL ADDR: %q", r)
	}
	expectClosed(t, c)
	d.do("PING")
	if r := a.do("CLIENT", "KILL", d.nc.LocalAddr().String()); r != "+OK\r\n" {
		t.Fatalf("old-form KILL: %q", r)
	}
	expectClosed(t, d)
	if r := a.do("CLIENT", "KILL", d.nc.LocalAddr().String()); r != "-ERR No such client\r\n" {
		t.Fatalf("old-form KILL of a gone client: %q", r)
	}
	// SKIPME defaults to yes; with no, the client is answered, then closed.
	if r := a.do("CLIENT", "KILL", "ID", aID); r != ":0\r\n" {
		t.Fatalf("KILL self, SKIPME default: %q", r)
	}
	a.send(append(encode("CLIENT", "KILL", "USER", "default", "SKIPME", "no"), encode("PING")...))
	out, err := a.readAllUntilClose(5 * time.Second)
	if string(out) != ":1\r\n" || err != io.EOF {
		t.Fatalf("KILL self: %q, %v", out, err)
	}
}

// TestClientUnblock: CLIENT UNBLOCK with the proxy's ID of a client blocked through the proxy
// unblocks it, as straight against Redis.
func TestClientUnblock(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up)
	run := func(addr string, idOf func(*rawConn) string) (string, string, string) {
		blocked, other := dialRaw(t, addr), dialRaw(t, addr)
		id := idOf(blocked)
		blocked.send(encode("BLPOP", "nokey", "0"))
		var r string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if r = other.do("CLIENT", "UNBLOCK", id); r != ":0\r\n" || time.Now().After(deadline) {
				break
			}
		}
		got := string(blocked.replies(1))
		blocked.send(encode("BLPOP", "nokey", "0"))
		var r2 string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if r2 = other.do("CLIENT", "UNBLOCK", id, "ERROR"); r2 != ":0\r\n" || time.Now().After(deadline) {
				break
			}
		}
		return r + r2, got, string(blocked.replies(1))
	}
	id := func(c *rawConn) string { return intReply(t, c.do("CLIENT", "ID")) }
	wr, wb, we := run(up.Addr(), id)
	gr, gb, ge := run(s.Addr().String(), id)
	if gr != wr || gb != wb || ge != we {
		t.Fatalf("proxy %q %q %q, Redis %q %q %q", gr, gb, ge, wr, wb, we)
	}
	// A client of the proxy that is not blocked (nor dedicated) is not unblocked.
	a, b := dialRaw(t, s.Addr().String()), dialRaw(t, s.Addr().String())
	if r := a.do("CLIENT", "UNBLOCK", id(b)); r != ":0\r\n" {
		t.Fatalf("UNBLOCK of a shared-path client: %q", r)
	}
}

// TestClientNoPerm: a user who may not list or kill clients gets Redis' own NOPERM.
func TestClientNoPerm(t *testing.T) {
	up := redistest.Start(t)
	if _, err := up.Do("ACL", "SETUSER", "limited", "on", ">pw", "~*", "+@all", "-client|list", "-client|kill"); err != nil {
		t.Fatal(err)
	}
	s := startProxy(t, up)
	for _, cmd := range [][]string{{"CLIENT", "LIST"}, {"CLIENT", "LIST", "TYPE", "foo"}, {"CLIENT", "KILL", "ID", "1"},
		{"CLIENT", "KILL", "1.2.3.4:5"}} {
		direct, proxied := dialRaw(t, up.Addr()), dialRaw(t, s.Addr().String())
		direct.do("AUTH", "limited", "pw")
		proxied.do("AUTH", "limited", "pw")
		if w, g := direct.do(cmd...), proxied.do(cmd...); g != w {
			t.Errorf("%v: proxy %q, Redis %q", cmd, g, w)
		}
	}
}

// TestClientTrackingRedirect: CLIENT TRACKING on REDIRECT takes the proxy's ID of the client
// that receives the invalidations, and CLIENT LIST shows it back as such.
func TestClientTrackingRedirect(t *testing.T) {
	up := redistest.Start(t)
	s := startProxy(t, up)
	addr := s.Addr().String()
	sub, tr, w := dialRaw(t, addr), dialRaw(t, addr), dialRaw(t, addr)
	subID, trID := intReply(t, sub.do("CLIENT", "ID")), intReply(t, tr.do("CLIENT", "ID"))
	sub.send(encode("SUBSCRIBE", "__redis__:invalidate"))
	sub.replies(1)

	direct := dialRaw(t, up.Addr())
	want := direct.do("CLIENT", "TRACKING", "on", "REDIRECT", "999999")
	if got := tr.do("CLIENT", "TRACKING", "on", "REDIRECT", "999999"); got != want {
		t.Fatalf("REDIRECT to no client: proxy %q, Redis %q", got, want)
	}
	if r := tr.do("CLIENT", "TRACKING", "on", "REDIRECT", subID); r != "+OK\r\n" {
		t.Fatalf("REDIRECT: %q", r)
	}
	tr.do("GET", "k")
	w.do("SET", "k", "v")
	if r := string(sub.replies(1)); !strings.Contains(r, "invalidate") || !strings.Contains(r, "$1\r\nk\r\n") {
		t.Fatalf("invalidation: %q", r)
	}
	if l := clientLines(t, w.do("CLIENT", "LIST", "ID", trID))[trID]; l["redir"] != subID || l["flags"] != "t" {
		t.Fatalf("tracking client: %v", l)
	}
}

// TestHelloID: HELLO's reply gives the same id as CLIENT ID, the proxy's id of the client, in
// RESP2 and RESP3.
func TestHelloID(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up)
	for _, proto := range []string{"2", "3"} {
		c := dialRaw(t, p.Addr().String())
		hello := c.do("HELLO", proto)
		id := strings.TrimSuffix(strings.TrimPrefix(c.do("CLIENT", "ID"), ":"), "\r\n")
		if !strings.Contains(hello, "$2\r\nid\r\n:"+id+"\r\n") {
			t.Errorf("HELLO %s: reply %q does not carry CLIENT ID's %s", proto, clip([]byte(hello)), id)
		}
	}
}

// TestClientKilledMidBatch: a client killed by another while its own batch still has CLIENT
// INFO to run answers it about itself (it found no view of itself once and panicked).
func TestClientKilledMidBatch(t *testing.T) {
	up := redistest.Start(t)
	var logs syncbuf.Buffer
	s := startProxy(t, up, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	addr := s.Addr().String()
	b := dialRaw(t, addr)
	for range 20 {
		a := dialRaw(t, addr)
		aID := intReply(t, a.do("CLIENT", "ID"))
		var batch []byte
		for range 5 {
			batch = append(batch, encode("CLIENT", "LIST")...)
		}
		a.send(append(batch, encode("CLIENT", "INFO")...))
		if r := b.do("CLIENT", "KILL", "ID", aID); r != ":1\r\n" {
			t.Fatalf("KILL: %q", r)
		}
		_, _ = a.readAllUntilClose(2 * time.Second)
	}
	for end := time.Now().Add(2 * time.Second); s.nclients.Load() > 1 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond) // every killed client's goroutine has ended
	}
	if out := logs.String(); strings.Contains(out, "internal error") {
		i := strings.Index(out, "internal error")
		t.Fatalf("a panic was logged:\n%s", out[i:min(len(out), i+600)])
	}
}
