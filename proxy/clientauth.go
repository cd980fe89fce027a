package proxy

import (
	"bytes"
	"context"
	"crypto/subtle"
	"net"
	"time"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// Client access (README "Client access"). Redis' own replies for it:
const (
	errNoAuth      = "-NOAUTH Authentication required.\r\n"
	errNoAuthHello = "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n"
	errWrongPass   = "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
	// errDenied is Redis' protected-mode refusal; its first two sentences are Redis' own, the
	// remedies the proxy's.
	errDenied = "DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. " +
		"In this mode connections are only accepted from the loopback interface. If you want to connect from external computers " +
		"through sessionproxy you may adopt one of the following solutions: 1) set clients.password and have clients AUTH with it; " +
		"2) have Redis require a password (requirepass or ACL users) and have clients AUTH with theirs; " +
		"3) set clients.protected_mode to no, and MAKE SURE the proxy is not publicly accessible from the internet."
)

// loopback reports whether addr is 127.0.0.1 or ::1, the sources Redis' protected mode accepts.
func loopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && (ta.IP.Equal(net.IPv4(127, 0, 0, 1)) || ta.IP.Equal(net.IPv6loopback))
}

// watchAnon asks Redis, at start and every 10 s, whether it serves a client that has not
// authenticated (an unauthenticated PING: -NOAUTH or not), and its client-query-buffer-limit. Protected mode "auto" follows it: off
// while Redis asks for a password (clients must then AUTH, and Redis checks them); until Redis
// answers, it stays on. Session writes of such a client are not rewritten while Redis refuses it
// (mayRewrite).
func (s *Server) watchAnon(ctx context.Context) {
	warmed := false
	for {
		qctx, cancel := context.WithTimeout(ctx, s.opts.ReadTimeout)
		reply, err := s.dialer.oneShot(qctx, poolKey{id: s.anonID}, resp.AppendCommand(nil, "PING"), 1, nil)
		cancel()
		if err == nil {
			open := !bytes.HasPrefix(reply, []byte("-NOAUTH"))
			s.protMu.Lock() // with SetClientPassword: the password and Redis' answer decide together
			s.anonOpen.Store(open)
			if s.opts.Protected == "auto" && s.clientPassword() == "" && s.protected.Swap(open) != open {
				s.log.Info("protected mode", "on", open, "why", "Redis asks unauthenticated clients for a password: "+boolWord(!open))
			}
			s.protMu.Unlock()
		}
		s.readQueryBufLimit(ctx)
		if !warmed && err == nil && s.cluster == nil {
			warmed = s.warmClientPool(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

// warmClientPool dials the shared connections (and the spare) that a new client's commands
// will use before AUTH or SELECT, so the first clients do not wait for dials (behind a storm of
// other connections one took 0.46 s, bench/bounds "watch"): the proxy's user's when clients
// log in to the proxy, Redis' default user's when Redis serves it without a password, none
// otherwise (such clients are answered -NOAUTH).
// It reports whether that is done (tried again at the next look at Redis if not).
func (s *Server) warmClientPool(ctx context.Context) bool {
	switch {
	case s.clientPassword() != "":
		return s.pools.warm(ctx, poolKey{id: s.defaultID})
	case s.anonOpen.Load():
		return s.pools.warm(ctx, poolKey{id: s.anonID})
	}
	return true
}

// clientPassword is the password clients must give (Options.ClientPassword, or a reload's).
func (s *Server) clientPassword() string { return *s.clientPW.Load() }

// SetClientPassword changes the password clients must give (clients.password, on a reload), as
// CONFIG SET requirepass does on Redis: clients that logged in stay in; the others must give
// the new one, or nothing when it is taken away. Protected mode "auto" follows.
func (s *Server) SetClientPassword(pw string) {
	s.protMu.Lock()
	defer s.protMu.Unlock()
	if old := s.clientPW.Swap(&pw); *old == pw {
		return // unchanged: protected mode stays as watchAnon set it
	}
	if s.opts.Protected == "auto" {
		s.protected.Store(pw == "" && s.anonOpen.Load())
	}
}

func boolWord(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// authGate answers the commands of a client that has not given ClientPassword yet, as Redis
// answers a client before AUTH when it requires a password: AUTH, HELLO with AUTH and QUIT run,
// anything else gets -NOAUTH. It returns the commands left once the client is authenticated.
func (c *client) authGate(cmds []redcon.Command) []redcon.Command {
	if c.s.clientPassword() == "" {
		c.authed = true // the password was taken away (a reload): as Redis, nothing to give
		return cmds
	}
	d := c.ded.Load()
	if d != nil {
		d.quiesce() // a client on its own connection: its earlier replies go first
	}
	for i, cmd := range cmds {
		if c.closing {
			return nil
		}
		if c.authed {
			return cmds[i:]
		}
		args := cmd.Args
		switch {
		case d != nil && equalFold(args[0], "AUTH") && (len(args) == 2 || len(args) == 3) && !c.proxyUser(args):
			// Another user's login on the client's own connection: Redis judges it there, and
			// the connection is then that user's (or still Redis' default user's).
			c.authed = true
			return cmds[i:]
		case equalFold(args[0], "AUTH") && (len(args) == 2 || len(args) == 3):
			cmdAuth(c, args)
		case equalFold(args[0], "AUTH"):
			c.write(errArity(args[0]))
		case equalFold(args[0], "HELLO"):
			if !helloHasAuth(args) {
				c.write([]byte(errNoAuthHello))
				continue
			}
			cmdHello(c, args)
		case equalFold(args[0], "QUIT"):
			cmdQuit(c, args)
		default:
			c.write([]byte(errNoAuth))
		}
	}
	return nil
}

// helloHasAuth reports whether a HELLO names AUTH after its protocol version: a login (or a
// malformed one, which Redis answers with its syntax error).
func helloHasAuth(args [][]byte) bool {
	for i := 2; i < len(args); i++ {
		if equalFold(args[i], "AUTH") {
			return true
		}
	}
	return false
}

// proxyUser reports whether AUTH args log in as the default user while ClientPassword is set:
// the proxy checks those.
func (c *client) proxyUser(args [][]byte) bool {
	return c.s.clientPassword() != "" && (len(args) == 2 || equalFold(args[1], "default"))
}

// proxyLogin checks a login as the default user against ClientPassword, when one is set: true
// if it was the proxy's to check (the reply is written when the password is wrong).
func (c *client) proxyLogin(user, pass string) (handled, ok bool) {
	pw := c.s.clientPassword()
	if pw == "" || user != "default" {
		return false, false
	}
	if subtle.ConstantTimeCompare([]byte(pass), []byte(pw)) != 1 {
		c.write([]byte(errWrongPass))
		return true, false
	}
	return true, true
}

// ownUserOnly refuses, with the error to send, the proxy's commands that run as the proxy's own
// Redis user (SESSIONS.REINDEX/CHECK; SESSIONS.* in cluster mode) to a client that runs as
// another one: its credentials are for the proxy's own work. nil: allowed.
func (c *client) ownUserOnly() []byte {
	if c.ident == c.s.defaultID {
		return nil
	}
	return redcon.AppendError(nil, "NOPERM this command runs as the proxy's own Redis user; "+
		"it is not available to a client authenticated as another user, or not authenticated")
}

// mayRewrite reports whether the client's session writes may become script calls: not while it
// is an unauthenticated client of a Redis that requires a password. Redis answers such a
// client's commands -NOAUTH, but refuses a command of more than 10 arguments from it with a
// protocol error that closes the connection, which a script call would be (and the connection
// is shared).
func (c *client) mayRewrite() bool { return c.ident != c.s.anonID || c.s.anonOpen.Load() }

// readQueryBufLimit reads Redis' client-query-buffer-limit (CONFIG GET, as the proxy's user)
// into s.queryBuf for the connections accepted from then on; refused or unreadable, the last
// value stays.
func (s *Server) readQueryBufLimit(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, s.opts.ReadTimeout)
	defer cancel()
	reply, err := s.dialer.oneShot(qctx, poolKey{id: s.defaultID}, resp.AppendCommand(nil, "CONFIG", "GET", "client-query-buffer-limit"), 1, nil)
	if err != nil {
		return
	}
	// *2 $25 client-query-buffer-limit $<n> <value>: the last line is the value.
	lines := bytes.Split(bytes.TrimSuffix(reply, []byte("\r\n")), []byte("\r\n"))
	if len(lines) != 5 {
		return
	}
	if v, ok := resp.ParseInt(lines[4]); ok && v > 0 {
		s.queryBuf.Store(v)
	}
}

// unauthenticated reports whether Redis' limits for unauthenticated clients apply to the
// client's next command (resp.Conn.Unauthenticated): it has not given ClientPassword, or it is
// Redis' default user without a password while Redis requires one.
func (c *client) unauthenticated() bool {
	return !c.authed || (c.ident == c.s.anonID && !c.s.anonOpen.Load())
}
