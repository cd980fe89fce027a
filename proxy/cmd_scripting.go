package proxy

import (
	"errors"
	"io"
)

// Scripting commands. A client's script may run for long: while it does, Redis answers every
// other connection -BUSY, but the commands queued behind it on the same connection just wait.
// On a shared connection those would be other clients' commands, so nothing of another client
// is written behind a script call (sharedConn holds it), and the commands Redis runs during a
// busy script go on a fresh connection of their own, never behind it.
var scriptingFamily = family{
	{name: "eval", script: true},
	{name: "evalsha", script: true},
	{name: "eval_ro", script: true},
	{name: "evalsha_ro", script: true},
	{name: "fcall", script: true},
	{name: "fcall_ro", script: true},
	{name: "script", classify: subcommand(routeLocal, "KILL"), local: cmdAtOnce},
	{name: "function", classify: subcommand(routeLocal, "KILL", "STATS"), local: cmdAtOnce},
	{name: "shutdown", route: routeLocal, local: cmdAtOnce},
}

// subcommand routes a command to r when its first argument is one of subs (any letter case)
// and it has no more arguments, and otherwise passes it through.
func subcommand(r route, subs ...string) func([][]byte) route {
	return func(args [][]byte) route {
		if len(args) == 2 {
			for _, s := range subs {
				if equalFold(args[1], s) {
					return r
				}
			}
		}
		return routeShared
	}
}

// cmdAtOnce runs SCRIPT KILL, FUNCTION KILL/STATS and SHUTDOWN, the commands Redis serves
// while a script is busy, on a fresh connection as the client's user: they must reach Redis at
// once, not behind the busy script on a shared connection (or another client's). A SHUTDOWN
// that succeeds ends the connection without a reply, and so does the proxy.
func cmdAtOnce(c *client, args [][]byte) {
	if c.s.cluster != nil && (equalFold(args[0], "SCRIPT") || equalFold(args[0], "FUNCTION")) && equalFold(args[1], "KILL") {
		c.killOnEveryPrimary(args)
		return
	}
	reply, err := c.askFresh(poolKey{id: c.ident, resp3: c.resp3}, args)
	switch {
	case err == nil:
		c.write(reply)
	case equalFold(args[0], "SHUTDOWN") && errors.Is(err, io.EOF):
		c.close()
	default:
		c.fail(1, err)
	}
}

// killOnEveryPrimary is SCRIPT KILL / FUNCTION KILL in cluster mode: the script may run on any
// primary, so each is asked on a fresh connection; the reply is the first +OK, else the first
// primary's (-NOTBUSY ...), else an error.
func (c *client) killOnEveryPrimary(args [][]byte) {
	m := c.s.cluster.m.Load()
	if m == nil {
		c.fail(1, errors.New("upstream unavailable: no slot map yet"))
		return
	}
	var first []byte
	var firstErr error
	for _, node := range m.Primaries() {
		reply, err := c.askFresh(poolKey{id: c.ident, resp3: c.resp3, node: node}, args)
		switch {
		case err == nil && string(reply) == replyOK:
			c.write(reply)
			return
		case err == nil && first == nil:
			first = reply
		case err != nil && firstErr == nil:
			firstErr = err
		}
	}
	if first != nil {
		c.write(first)
		return
	}
	c.fail(1, firstErr)
}
