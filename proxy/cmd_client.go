package proxy

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// CLIENT ID, INFO, LIST, KILL and UNBLOCK about the proxy's own clients. Redis' answers would
// describe the proxy's upstream connections, which many clients share, so the proxy answers them
// from what it keeps per client (cmdClient dispatches here; classifyClient routes them local).
// A client on its own upstream connection gets the connection-state fields (flags, sub, multi,
// buffers, db, user, name...) from Redis' CLIENT LIST entry of that connection.

// clientInfo is what CLIENT LIST tells about a client. The client's goroutine writes it; any
// client's CLIENT LIST or KILL reads it: immutable fields, an atomic, and a snapshot under mu
// published once per batch (noteBatch), so the hot path pays one clock read and one atomic store.
type clientInfo struct {
	created     int64 // unix ns
	addr, laddr string
	fd          int
	active      atomic.Int64 // unix ns of the last batch

	// Only the client's goroutine writes pub, under mu; it reads it without.
	mu  sync.Mutex
	pub clientPub
	// killSelf: a CLIENT KILL on the dedicated path matched the client itself; it is closed once
	// the reply has been relayed (noteBatch). Owned by the client's goroutine.
	killSelf bool
	// killed: a CLIENT KILL matched this client. Redis takes a killed client out of its list at
	// once; the proxy's goroutine for it may not have cleaned up yet.
	killed atomic.Bool
}

// clientPub is the part of a client's state others read, as of its last batch.
type clientPub struct {
	name  string
	db    int
	user  string
	resp3 bool
	spec  *cmdSpec // last command of the batch
	sub   string   // its lower-case subcommand, for a container command (CLIENT LIST -> "list")
}

// initInfo records the connection's fixed facts; called once at accept.
func (c *client) initInfo() {
	in := &c.info
	now := time.Now().UnixNano()
	in.created = now
	in.active.Store(now)
	in.addr, in.laddr, in.fd = c.nc.RemoteAddr().String(), c.nc.LocalAddr().String(), -1
	nc := c.nc
	if rc, ok := nc.(*resp.Conn); ok {
		nc = rc.Conn
	}
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn() // the TCP connection under TLS has the fd
	}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) { in.fd = int(fd) })
		}
	}
	in.pub = clientPub{user: c.ident.user}
}

// noteBatch publishes, after a batch, what CLIENT LIST shows of the client; the lock is taken
// only when something shown changed. It also carries out a CLIENT KILL of the client itself
// sent on its dedicated connection, after that reply is relayed.
func (c *client) noteBatch() {
	in := &c.info
	in.active.Store(time.Now().UnixNano())
	last := c.batch[len(c.batch)-1].Args
	spec := c.s.table.lookup(last[0])
	p := &in.pub
	var sub []byte
	if len(last) > 1 && spec.container {
		sub = last[1]
	}
	// The subcommand is kept across other commands: a client that alternates CONFIG GET and
	// GET batches allocates its name once.
	newSub := sub != nil && !equalLower(sub, p.sub)
	if p.spec != spec || newSub || p.name != c.name || p.db != c.db ||
		p.user != c.ident.user || p.resp3 != c.resp3 {
		subName := p.sub
		if newSub {
			subName = strings.ToLower(string(sub))
		}
		in.mu.Lock()
		*p = clientPub{name: c.name, db: c.db, user: c.ident.user, resp3: c.resp3, spec: spec, sub: subName}
		in.mu.Unlock()
	}
	if in.killSelf && !c.closing {
		if d := c.ded.Load(); d != nil {
			d.quiesce()
		}
		c.close()
	}
}

// containers are the Redis 7.0 commands whose CLIENT LIST cmd= names the subcommand too.
var containers = map[string]bool{
	"acl": true, "client": true, "cluster": true, "command": true, "config": true, "function": true,
	"latency": true, "memory": true, "module": true, "object": true, "pubsub": true, "script": true,
	"slowlog": true, "xgroup": true, "xinfo": true,
}

// equalLower reports whether b, lower-cased, is s.
func equalLower(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		ch := b[i]
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		if ch != s[i] {
			return false
		}
	}
	return true
}

// classifyClientLocal routes the CLIENT subcommands the proxy answers about its own clients;
// ok is false for the others. Wrong argument counts pass through: Redis answers the arity error.
func classifyClientLocal(args [][]byte) (route, bool) {
	sub, n := args[1], len(args)
	switch {
	case equalFold(sub, "ID") || equalFold(sub, "INFO"):
		if n == 2 {
			return routeLocal, true
		}
		return routeShared, true
	case equalFold(sub, "LIST"):
		return routeLocal, true
	case equalFold(sub, "KILL"):
		if n >= 3 {
			return routeLocal, true
		}
		return routeShared, true
	case equalFold(sub, "UNBLOCK"):
		if n == 3 || n == 4 {
			return routeLocal, true
		}
		return routeShared, true
	}
	return 0, false
}

// answersClient reports whether the proxy answers this CLIENT command about its clients.
func answersClient(args [][]byte) bool {
	if len(args) < 2 {
		return false
	}
	r, ok := classifyClientLocal(args)
	return ok && r == routeLocal
}

// cmdClientLocal answers a CLIENT subcommand classifyClientLocal routed local (shared path).
func cmdClientLocal(c *client, args [][]byte) {
	reply := c.clientReply(args)
	c.write(reply)
	if c.info.killSelf {
		c.close() // Redis closes the connection after the reply, and runs nothing after it
	}
}

// proxyClientCmd reports whether a CLIENT command on the dedicated path is about the proxy's
// clients: one the proxy answers, or a TRACKING that names a client to redirect to.
func proxyClientCmd(args [][]byte) bool {
	return answersClient(args) || redirectArg(args) > 0
}

// redirectArg is the position of CLIENT TRACKING's REDIRECT value, or 0. Options are read as
// Redis reads them, so a PREFIX named "redirect" is not taken for one.
func redirectArg(args [][]byte) int {
	if len(args) < 3 || !equalFold(args[1], "TRACKING") {
		return 0
	}
	for j := 3; j+1 < len(args); j++ {
		switch {
		case equalFold(args[j], "REDIRECT"):
			return j + 1
		case equalFold(args[j], "PREFIX"):
			j++
		}
	}
	return 0
}

// appendClientCmd appends, on the dedicated path, a CLIENT command about the proxy's clients.
// TRACKING ... REDIRECT id goes up with the upstream ID of that client's own connection (an ID
// that matches nothing if it has none: Redis then refuses the redirection). The others become an
// EVAL returning the proxy's answer, so the reply keeps its place among the relayed ones; it is
// computed when the command arrives (a KILL acts then, even inside MULTI).
func (d *dedicated) appendClientCmd(cmd redcon.Command) {
	args := cmd.Args
	if i := redirectArg(args); i > 0 {
		d.out = redcon.AppendArray(d.out, len(args))
		for j, a := range args {
			if j == i {
				a = []byte(d.c.s.upstreamID(a))
			}
			d.out = redcon.AppendBulk(d.out, a)
		}
		return
	}
	d.out = appendEchoRaw(d.out, d.c.clientReply(args))
	if d.c.info.killSelf {
		d.quit.Store(true) // as after QUIT, nothing more is forwarded; noteBatch closes the client
	}
}

// Scripts returning a reply the proxy composed (see echoError).
const (
	echoInt  = "return tonumber(ARGV[1])"
	echoBulk = "return ARGV[1]"
	echoOK   = "return {ok = ARGV[1]}"
)

// appendEchoRaw appends an EVAL whose reply is reply (an error, integer, status or bulk reply;
// a RESP3 verbatim string comes back as a plain bulk string).
func appendEchoRaw(dst, reply []byte) []byte {
	line := bytes.IndexByte(reply, '\n')
	switch reply[0] {
	case '-':
		return appendEchoError(dst, reply)
	case ':':
		return appendEcho(dst, echoInt, string(reply[1:line-1]))
	case '+':
		return appendEcho(dst, echoOK, string(reply[1:line-1]))
	}
	body := reply[line+1 : len(reply)-2]
	if reply[0] == '=' {
		body = body[4:] // "txt:"
	}
	return appendEcho(dst, echoBulk, string(body))
}

// clientReply computes the reply to CLIENT ID, INFO, LIST, KILL or UNBLOCK.
func (c *client) clientReply(args [][]byte) []byte {
	sub := args[1]
	switch {
	case equalFold(sub, "ID"):
		return redcon.AppendInt(nil, int64(c.id))
	case equalFold(sub, "INFO"):
		// Redis' answer about the client's own upstream connection, if it has one, fills the
		// connection-state fields; without it (e.g. the user may not run CLIENT LIST) the
		// proxy's view stands.
		var up map[string][]string
		if c.ded.Load() != nil {
			if r, err := c.askUpstream(resp.AppendCommand(nil, "CLIENT", "LIST")); err == nil && r[0][0] != '-' {
				up = parseClientList(r[0])
			}
		}
		views := c.clientViews(args, up, func(o *client) bool { return o == c })
		return c.appendText(nil, appendClientLine(nil, views[0]))
	case equalFold(sub, "LIST"):
		return c.clientList(args)
	case equalFold(sub, "KILL"):
		return c.clientKill(args)
	default:
		return c.clientUnblock(args)
	}
}

// Redis' error replies for CLIENT LIST/KILL.
const (
	errSyntax          = "-ERR syntax error\r\n"
	errInvalidClientID = "-ERR Invalid client ID\r\n"
	errNoSuchClient    = "-ERR No such client\r\n"
)

// noClientID is a client ID that matches no connection: checks sent to Redis carry it so that
// they act on nothing.
const noClientID = "9223372036854775807"

// clientList answers CLIENT LIST [TYPE type] [ID id ...]. Redis first runs a plain CLIENT LIST
// as the client's user: that checks the user's right to list clients (NOPERM comes first, as
// from Redis) and gives the entries of the dedicated connections.
func (c *client) clientList(args [][]byte) []byte {
	r, err := c.askUpstream(resp.AppendCommand(nil, "CLIENT", "LIST"))
	if err != nil {
		return appendLostReplies(nil, 1, err)
	}
	if r[0][0] == '-' {
		return r[0]
	}
	up := parseClientList(r[0])
	match := func(*client) bool { return true }
	typ := ""
	switch n := len(args); {
	case n == 4 && equalFold(args[2], "TYPE"):
		if typ = clientTypeByName(args[3]); typ == "" {
			return errUnknownClientType(args[3])
		}
	case n > 3 && equalFold(args[2], "ID"):
		ids := make([]uint64, 0, n-3)
		for _, a := range args[3:] {
			id, ok := resp.ParseInt(a)
			if !ok {
				return []byte(errInvalidClientID)
			}
			ids = append(ids, uint64(id))
		}
		match = func(o *client) bool { return slices.Contains(ids, o.id) }
	case n != 2:
		return []byte(errSyntax)
	}
	var out []byte
	for _, v := range c.clientViews(args, up, match) {
		if typ == "" || v.typ() == typ {
			out = appendClientLine(out, v)
		}
	}
	return c.appendText(nil, out)
}

// clientKill answers CLIENT KILL addr and CLIENT KILL filter value ... by closing the matching
// clients of the proxy. Redis first judges the same filters as the client's user, with an ID
// that matches nothing added, so every error (syntax, type, user, NOPERM) is its own.
func (c *client) clientKill(args [][]byte) []byte {
	var check []byte
	if len(args) == 3 { // the old form: only the right to kill is checked
		check = resp.AppendCommand(nil, "CLIENT", "KILL", "ID", noClientID)
	} else {
		// An option without its value (an odd count) is refused before anything is killed.
		paired := len(args)%2 == 0
		n := len(args)
		if paired {
			n += 2
		}
		check = redcon.AppendArray(nil, n)
		for _, a := range args {
			check = redcon.AppendBulk(check, a)
		}
		if paired {
			check = redcon.AppendBulkString(check, "ID")
			check = redcon.AppendBulkString(check, noClientID)
		}
	}
	r, err := c.askUpstream(check, resp.AppendCommand(nil, "CLIENT", "LIST"))
	if err != nil {
		return appendLostReplies(nil, 1, err)
	}
	if r[0][0] == '-' {
		return r[0]
	}
	var up map[string][]string
	if r[1][0] != '-' { // a user may be allowed to kill but not to list: then the proxy's view
		up = parseClientList(r[1])
	}
	var addr, laddr, user, typ string
	id, skipme := uint64(0), true
	if len(args) == 3 {
		addr, skipme = string(args[2]), false // with the old form a client may kill itself
	} else {
		for i := 2; i+1 < len(args); i += 2 {
			v := args[i+1]
			switch opt := args[i]; {
			case equalFold(opt, "ID"):
				n, _ := resp.ParseInt(v)
				id = uint64(n)
			case equalFold(opt, "TYPE"):
				typ = clientTypeByName(v)
			case equalFold(opt, "ADDR"):
				addr = string(v)
			case equalFold(opt, "LADDR"):
				laddr = string(v)
			case equalFold(opt, "USER"):
				user = string(v)
			case equalFold(opt, "SKIPME"):
				skipme = equalFold(v, "YES")
			}
		}
	}
	killed := 0
	for _, v := range c.clientViews(args, up, func(*client) bool { return true }) {
		if addr != "" && v.f[fAddr] != addr || laddr != "" && v.f[fLaddr] != laddr ||
			typ != "" && v.typ() != typ || id != 0 && v.c.id != id || user != "" && v.f[fUser] != user ||
			v.c == c && skipme {
			continue
		}
		if !v.c.info.killed.CompareAndSwap(false, true) {
			continue // a concurrent KILL took it: counted once
		}
		if v.c == c {
			c.info.killSelf = true
		} else {
			v.c.nc.Close() // its goroutine sees the closed connection and cleans up
		}
		killed++
	}
	if len(args) == 3 {
		if killed == 0 {
			return []byte(errNoSuchClient)
		}
		return []byte(replyOK)
	}
	return redcon.AppendInt(nil, int64(killed))
}

// clientUnblock answers CLIENT UNBLOCK id [TIMEOUT|ERROR]. A client blocked through the proxy
// is blocked on its dedicated connection: Redis gets the UNBLOCK for that connection's own ID
// (found in its CLIENT LIST by the connection's address), as the client's user. Any other
// client cannot be blocked, and the UNBLOCK then names an ID that matches nothing.
func (c *client) clientUnblock(args [][]byte) []byte {
	target := c.s.upstreamID(args[2])
	fwd := resp.AppendCommand(nil, "CLIENT", "UNBLOCK", target)
	if len(args) == 4 {
		fwd = redcon.AppendArray(nil, 4)
		fwd = redcon.AppendBulkString(fwd, "CLIENT")
		fwd = redcon.AppendBulkString(fwd, "UNBLOCK")
		fwd = redcon.AppendBulkString(fwd, target)
		fwd = redcon.AppendBulk(fwd, args[3])
	}
	r, err := c.askUpstream(fwd)
	if err != nil {
		return appendLostReplies(nil, 1, err)
	}
	return r[0]
}

// upstreamID translates the proxy's client ID id to the ID Redis gave that client's dedicated
// connection, found in Redis' CLIENT LIST by the connection's address. A client without one
// gets an ID that matches nothing; what is not an integer stays as it is, for Redis to refuse.
func (s *Server) upstreamID(id []byte) string {
	n, ok := resp.ParseInt(id)
	if !ok {
		return string(id)
	}
	if d := s.dedicatedOf(uint64(n)); d != nil {
		if r, err := s.listAsProxy(); err == nil && r[0] != '-' {
			if f, ok := parseClientList(r)[d.nc.LocalAddr().String()]; ok {
				return f[fID]
			}
		}
	}
	return noClientID
}

// dedicatedOf finds the dedicated connection of the proxy's client id, if it has one.
func (s *Server) dedicatedOf(id uint64) *dedicated {
	s.mu.Lock()
	defer s.mu.Unlock()
	for o := range s.clients {
		if o.id == id && !o.info.killed.Load() {
			return o.ded.Load()
		}
	}
	return nil
}

// listAsProxy runs CLIENT LIST upstream as the proxy's own user: to find the ID Redis gave a
// dedicated connection, whatever the asking client's user may list.
func (s *Server) listAsProxy() ([]byte, error) {
	return s.dialer.oneShot(s.ctx, poolKey{id: s.defaultID}, resp.AppendCommand(nil, "CLIENT", "LIST"), 1, nil)
}

// askUpstream runs cmds (one raw command each) over the client's shared upstream connection,
// as its user, and returns their raw replies (valid until the client's next upstream request).
func (c *client) askUpstream(cmds ...[]byte) ([][]byte, error) {
	up := make([]redcon.Command, len(cmds))
	for i, b := range cmds {
		up[i] = redcon.Command{Raw: b}
	}
	if _, err := c.doShared(up); err != nil {
		return nil, err
	}
	req := &c.req
	out := make([][]byte, len(req.ends))
	for i := range req.ends {
		out[i] = req.reply[req.replyStart(i):req.ends[i]]
	}
	return out, nil
}

// appendText appends text as Redis replies CLIENT LIST/INFO: a verbatim string in RESP3.
func (c *client) appendText(dst, text []byte) []byte {
	if !c.resp3 {
		return redcon.AppendBulk(dst, text)
	}
	dst = append(dst, '=')
	dst = strconv.AppendInt(dst, int64(len(text)+4), 10)
	dst = append(dst, "\r\ntxt:"...)
	dst = append(dst, text...)
	return append(dst, '\r', '\n')
}

// The fields of a CLIENT LIST line, in Redis 7.0's order.
var clientFields = [...]string{"id", "addr", "laddr", "fd", "name", "age", "idle", "flags", "db", "sub",
	"psub", "ssub", "multi", "qbuf", "qbuf-free", "argv-mem", "multi-mem", "rbs", "rbp", "obl", "oll",
	"omem", "tot-mem", "events", "cmd", "user", "redir", "resp"}

const (
	fID = iota
	fAddr
	fLaddr
	fFD
	fName
	fAge
	fIdle
	fFlags
	fDB
	fSub
	fPsub
	fSsub
	fMulti
	fQbuf
	fQbufFree
	fArgvMem
	fMultiMem
	fRbs
	fRbp
	fObl
	fOll
	fOmem
	fTotMem
	fEvents
	fCmd
	fUser
	fRedir
	fResp
	nFields
)

// fromUpstream are the fields a dedicated client shows from Redis' entry of its connection: the
// state of that connection. id, addr, laddr, fd, age, idle and cmd stay the proxy's.
var fromUpstream = []int{fName, fFlags, fDB, fSub, fPsub, fSsub, fMulti, fQbuf, fQbufFree, fArgvMem,
	fMultiMem, fRbs, fRbp, fObl, fOll, fOmem, fTotMem, fEvents, fUser, fRedir, fResp}

// clientView is one client as CLIENT LIST shows it.
type clientView struct {
	c *client
	f [nFields]string
}

// typ is the client's type as CLIENT LIST TYPE / KILL TYPE name it (getClientType).
func (v *clientView) typ() string {
	fl := v.f[fFlags]
	switch {
	case strings.Contains(fl, "M"):
		return "master"
	case strings.Contains(fl, "S") && !strings.Contains(fl, "O"):
		return "slave"
	case strings.Contains(fl, "P"):
		return "pubsub"
	}
	return "normal"
}

// clientTypeByName is getClientTypeByName ("" for an unknown type); replica is slave.
func clientTypeByName(b []byte) string {
	for _, t := range []string{"normal", "slave", "pubsub", "master"} {
		if equalFold(b, strings.ToUpper(t)) {
			return t
		}
	}
	if equalFold(b, "REPLICA") {
		return "slave"
	}
	return ""
}

func errUnknownClientType(b []byte) []byte {
	return []byte("-ERR Unknown client type '" + string(b) + "'\r\n")
}

// clientViews lists the proxy's clients that match, by ID. c itself, whose current command is
// args, is shown as it is now; the others as of their last batch. up holds Redis' CLIENT LIST
// entries by address: a dedicated client's entry fills its connection-state fields.
func (c *client) clientViews(args [][]byte, up map[string][]string, match func(*client) bool) []clientView {
	s := c.s
	now := time.Now().UnixNano()
	s.mu.Lock()
	var views []clientView
	for o := range s.clients {
		if (o != c && o.info.killed.Load()) || !match(o) { // c itself runs on until its batch ends
			continue
		}
		in := &o.info
		var p clientPub
		if o == c {
			p = clientPub{name: c.name, db: c.db, user: c.ident.user, resp3: c.resp3,
				spec: s.table.lookup(args[0]), sub: strings.ToLower(string(args[1]))}
		} else {
			in.mu.Lock()
			p = in.pub
			in.mu.Unlock()
		}
		v := clientView{c: o}
		f := &v.f
		f[fID] = strconv.FormatUint(o.id, 10)
		f[fAddr], f[fLaddr], f[fFD], f[fName] = in.addr, in.laddr, strconv.Itoa(in.fd), p.name
		f[fAge] = strconv.FormatInt((now-in.created)/int64(time.Second), 10)
		idle := int64(0)
		if o != c {
			idle = (now - in.active.Load()) / int64(time.Second)
		}
		f[fIdle] = strconv.FormatInt(max(idle, 0), 10)
		f[fFlags], f[fDB] = "N", strconv.Itoa(p.db)
		for _, i := range []int{fSub, fPsub, fSsub, fQbuf, fQbufFree, fArgvMem, fMultiMem, fRbs, fRbp,
			fObl, fOll, fOmem, fTotMem} {
			f[i] = "0"
		}
		f[fMulti], f[fEvents], f[fRedir] = "-1", "r", "-1"
		f[fCmd] = "NULL"
		if p.spec != nil && p.spec != s.table.other {
			f[fCmd] = p.spec.name
			if p.spec.container && p.sub != "" {
				f[fCmd] += "|" + p.sub
			}
		}
		f[fUser], f[fResp] = p.user, "2"
		if p.resp3 {
			f[fResp] = "3"
		}
		if d := o.ded.Load(); d != nil && up != nil {
			if uf, ok := up[d.nc.LocalAddr().String()]; ok {
				for _, i := range fromUpstream {
					f[i] = uf[i]
				}
			}
		}
		views = append(views, v)
	}
	s.mu.Unlock()
	slices.SortFunc(views, func(a, b clientView) int { return cmp.Compare(a.c.id, b.c.id) })
	// A tracking redirection names an upstream connection: show the proxy's ID of its client.
	if up != nil {
		for i := range views {
			if r := views[i].f[fRedir]; r != "-1" && r != "0" {
				views[i].f[fRedir] = s.proxyIDOf(up, r)
			}
		}
	}
	return views
}

// proxyIDOf maps an upstream connection's ID to the proxy's ID of the client owning it as its
// dedicated connection; other IDs (not the proxy's clients) are returned as they are.
func (s *Server) proxyIDOf(up map[string][]string, upID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for o := range s.clients {
		if d := o.ded.Load(); d != nil {
			if f, ok := up[d.nc.LocalAddr().String()]; ok && f[fID] == upID {
				return strconv.FormatUint(o.id, 10)
			}
		}
	}
	return upID
}

// appendClientLine appends v as one CLIENT LIST line.
func appendClientLine(dst []byte, v clientView) []byte {
	for i, name := range clientFields {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = append(dst, name...)
		dst = append(dst, '=')
		dst = append(dst, v.f[i]...)
	}
	return append(dst, '\n')
}

// parseClientList parses Redis' CLIENT LIST reply (bulk or verbatim) into each entry's fields
// in clientFields order, by addr. Entries with other fields (another Redis version) are skipped.
func parseClientList(reply []byte) map[string][]string {
	line := bytes.IndexByte(reply, '\n')
	if line < 0 || (reply[0] != '$' && reply[0] != '=') {
		return nil
	}
	body := string(reply[line+1 : len(reply)-2])
	if reply[0] == '=' {
		body = strings.TrimPrefix(body, "txt:")
	}
	out := make(map[string][]string)
	for _, l := range strings.Split(body, "\n") {
		kv := strings.Split(l, " ")
		if len(kv) != nFields {
			continue
		}
		f := make([]string, nFields)
		ok := true
		for i, p := range kv {
			k, v, _ := strings.Cut(p, "=")
			if k != clientFields[i] {
				ok = false
				break
			}
			f[i] = v
		}
		if ok {
			out[f[fAddr]] = f
		}
	}
	return out
}
