package proxy

import (
	"bytes"
	"math"
	"strconv"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// Connection commands: the proxy keeps the client's DB, ACL identity and name itself, so the
// client can keep sharing upstream connections.
var connFamily = family{
	{name: "auth", classify: arity(routeLocal, 2, 3), local: cmdAuth},
	{name: "select", classify: arity(routeLocal, 2), local: cmdSelect, track: (*dedicated).trackSelect},
	{name: "quit", route: routeLocal, local: cmdQuit, track: (*dedicated).trackQuit},
	{name: "reset", classify: arity(routeLocal, 1), local: cmdReset, track: (*dedicated).trackReset},
	{name: "client", classify: classifyClient, local: cmdClient,
		sendDedicated: (*dedicated).sendClient, track: (*dedicated).trackClient},
	{name: "hello", route: routeLocal, local: cmdHello},
}

// arity routes a command to r when its argument count is one of ns, and otherwise passes it
// through: Redis answers the arity error itself, and an invalid command changes no state.
func arity(r route, ns ...int) func([][]byte) route {
	return func(args [][]byte) route {
		for _, n := range ns {
			if len(args) == n {
				return r
			}
		}
		return routeShared
	}
}

// Redis' own replies for the states the proxy answers.
const (
	replyOK          = "+OK\r\n"
	replyReset       = "+RESET\r\n"
	replyNilBulk     = "$-1\r\n"
	replyNull        = "_\r\n"
	errNotInteger    = "-ERR value is not an integer or out of range\r\n"
	errNotInt32      = "-ERR value is out of range, value must between -2147483648 and 2147483647\r\n"
	errBadClientName = "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
)

// cmdAuth asks Redis itself, on a fresh connection, whether the credentials are good, relays
// its reply verbatim, and on success runs the client's commands as that user from now on.
func cmdAuth(c *client, args [][]byte) {
	id := identity{user: "default", pass: string(args[1]), auth: true}
	if len(args) == 3 {
		id = identity{user: string(args[1]), pass: string(args[2]), auth: true}
	}
	if handled, ok := c.proxyLogin(id.user, id.pass); handled {
		if ok { // ClientPassword: the client runs as the proxy's user
			c.setIdentity(c.s.defaultID, aclAllowed)
			c.authed = true
			if d := c.ded.Load(); d != nil && c.s.defaultID.creds() {
				d.loginAsProxy() // its own connection logs in as the proxy's user too
			} else {
				c.write([]byte(replyOK))
			}
		}
		return
	}
	// Ask with the client's own words: one-argument AUTH has its own errors (no password set).
	reply, acl, ok := c.askRedis(poolKey{}, args, &id)
	if !ok {
		return
	}
	c.write(reply)
	if string(reply) == replyOK {
		c.setIdentity(id, acl)
		c.authed = true
	}
}

// cmdSelect switches the client to the shared connections of another DB. Redis itself judges
// the index (out of range, the user's ACL, a busy script...): SELECT n and a SELECT back to the
// current DB go over the client's shared connection as one request, so nothing of another client
// runs in between, and the first reply is the client's.
func cmdSelect(c *client, args [][]byte) {
	db, ok := resp.ParseInt(args[1])
	switch {
	case !ok:
		c.write([]byte(errNotInteger))
		return
	case db < math.MinInt32 || db > math.MaxInt32:
		c.write([]byte(errNotInt32))
		return
	}
	r, err := c.askUpstream(resp.AppendCommand(nil, "SELECT", string(args[1])), resp.AppendCommand(nil, "SELECT", strconv.Itoa(c.db)))
	if err != nil {
		c.fail(1, err)
		return
	}
	if string(r[0]) == replyOK {
		c.db, c.pool = int(db), nil
		if p, err := c.s.pools.get(c.key()); err == nil {
			c.pool = p // now: it readies its spare connection for this DB
		}
	}
	c.write(r[0])
}

// cmdHello lets Redis itself judge the HELLO (protocol version, AUTH, SETNAME: every error
// byte for byte) on a fresh connection in the client's state, relays its reply, and on success
// adopts what it set: the protocol (the client then shares RESP3 connections), user and name.
func cmdHello(c *client, args [][]byte) {
	var login *identity
	name := c.name
	ask, asID, proxyAuthed := args, c.ident, false
	for i := 2; i < len(args); i++ {
		switch {
		case equalFold(args[i], "AUTH") && i+2 < len(args):
			login = &identity{user: string(args[i+1]), pass: string(args[i+2]), auth: true}
			if handled, ok := c.proxyLogin(login.user, login.pass); handled {
				if !ok {
					return
				}
				// ClientPassword: Redis is asked the rest of HELLO as the proxy's user.
				ask = append(append([][]byte{}, args[:i]...), args[i+3:]...)
				login, asID, proxyAuthed = nil, c.s.defaultID, true
			}
			i += 2
		case equalFold(args[i], "SETNAME") && i+1 < len(args):
			name = string(args[i+1])
			i++
		}
	}
	reply, acl, ok := c.askRedis(poolKey{id: asID, resp3: c.resp3}, ask, login)
	if !ok {
		return
	}
	if len(reply) == 0 || (reply[0] != '%' && reply[0] != '*') {
		c.write(reply)
		return // an error: nothing changed
	}
	c.write(withClientID(reply, c.id))
	if len(args) > 1 {
		c.resp3 = string(args[1]) == "3"
	}
	switch {
	case login != nil:
		c.setIdentity(*login, acl)
		c.authed = true
	case proxyAuthed:
		c.setIdentity(c.s.defaultID, aclAllowed)
		c.authed = true
	}
	c.name, c.pool = name, nil
}

// helloID is where HELLO's reply gives the connection's id (RESP2 and RESP3 alike).
var helloID = []byte("$2\r\nid\r\n:")

// withClientID puts the proxy's id of the client in HELLO's reply, in place of the id of the
// upstream connection that answered it: the one CLIENT ID, INFO and LIST give.
func withClientID(reply []byte, id uint64) []byte {
	i := bytes.Index(reply, helloID)
	if i < 0 {
		return reply
	}
	start := i + len(helloID)
	end := bytes.Index(reply[start:], []byte("\r\n"))
	if end < 0 {
		return reply
	}
	out := append([]byte{}, reply[:start]...)
	out = strconv.AppendUint(out, id, 10)
	return append(out, reply[start+end:]...)
}

// askRedis sends the client's command as it is on a fresh upstream connection in state key
// and returns Redis' raw reply; on a transport failure it answers the client itself (false).
// login, if not nil, is the user the command logs in as (AUTH, HELLO ... AUTH): when its
// rights to run the index scripts are not known yet, the ACL probe follows the command in the
// same write. The verdict is what that user may do (see aclCheck).
func (c *client) askRedis(key poolKey, args [][]byte, login *identity) ([]byte, aclVerdict, bool) {
	acl, known := aclAllowed, true
	if login != nil {
		acl, known = c.s.aclKnown(c.ix.acl, *login)
	}
	var judge *aclJudge
	if !known {
		judge = &aclJudge{}
	}
	reply, err := c.ask(key, args, judge)
	if err != nil {
		c.fail(1, err)
		return nil, acl, false
	}
	if !known && reply[0] != '-' { // logged in: the probe ran as that user
		acl = c.s.aclLearn(c.ix.acl, *login, judge.verdict())
	}
	return reply, acl, true
}

// askFresh sends the client's command as it is on a fresh upstream connection in state key
// and returns Redis' raw reply.
func (c *client) askFresh(key poolKey, args [][]byte) ([]byte, error) {
	return c.ask(key, args, nil)
}

// ask sends args on a fresh connection in state key, followed in the same write by the ACL
// probe when judge is not nil, and returns the raw reply to args.
func (c *client) ask(key poolKey, args [][]byte, judge *aclJudge) ([]byte, error) {
	c.handedOff() // a new connection keeps no order with others: let later batches go meanwhile
	ask := redcon.AppendArray(nil, len(args))
	for _, a := range args {
		ask = redcon.AppendBulk(ask, a)
	}
	n, rest := 1, func([]byte) {}
	if judge != nil {
		ask = append(ask, c.ix.acl.probe...)
		n += c.ix.acl.probeN
		rest = judge.reply
	}
	return c.s.dialer.oneShot(c.s.ctx, key, ask, n, rest)
}

func cmdQuit(c *client, _ [][]byte) {
	c.write([]byte(replyOK))
	c.close()
}

// cmdReset returns the connection to its initial state: DB 0, no name, and not authenticated
// (Redis' default user; with ClientPassword, AUTH is asked again).
func cmdReset(c *client, _ [][]byte) {
	c.setIdentity(c.s.anonID, aclAllowed)
	c.authed = c.s.clientPassword() == ""
	c.db, c.name, c.resp3, c.tx = 0, "", false, nil
	c.write([]byte(replyReset))
}

// classifyClient routes CLIENT subcommands: the name is kept by the proxy, and ID/INFO/LIST/
// KILL/UNBLOCK are answered about its clients (cmd_client.go); other subcommands about "this
// connection" need a real one of the client's own; the rest are server-wide and shared.
func classifyClient(args [][]byte) route {
	if len(args) < 2 {
		return routeShared
	}
	if r, ok := classifyClientLocal(args); ok {
		return r
	}
	sub := args[1]
	switch {
	case equalFold(sub, "SETNAME") && len(args) == 3, equalFold(sub, "GETNAME") && len(args) == 2:
		return routeLocal
	case equalFold(sub, "TRACKING"), equalFold(sub, "REPLY"), equalFold(sub, "CACHING"),
		equalFold(sub, "NO-EVICT"), equalFold(sub, "NO-TOUCH"),
		equalFold(sub, "GETREDIR"), equalFold(sub, "TRACKINGINFO"):
		return routeDedicated
	}
	return routeShared
}

func cmdClient(c *client, args [][]byte) {
	if !equalFold(args[1], "SETNAME") && !equalFold(args[1], "GETNAME") {
		cmdClientLocal(c, args)
		return
	}
	if len(args) == 2 { // GETNAME
		if c.name == "" {
			if c.resp3 {
				c.write([]byte(replyNull))
			} else {
				c.write([]byte(replyNilBulk))
			}
			return
		}
		c.write(appendBulk(nil, c.name))
		return
	}
	name := args[2]
	for _, ch := range name {
		if ch < '!' || ch > '~' {
			c.write([]byte(errBadClientName))
			return
		}
	}
	c.name = string(name)
	c.write([]byte(replyOK))
}

func appendBulk(dst []byte, s string) []byte {
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, '\r', '\n')
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}
