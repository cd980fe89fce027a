package proxy

import (
	"time"

	"github.com/tidwall/redcon"
)

// Limits are the settings a config reload may change while clients stay connected
// (SetLimits): read where they apply, each time.
type Limits struct {
	MaxClients        int
	MaxDedicated      int           // 0: no bound
	IdleTimeout       time.Duration // 0: none
	CommandTimeout    time.Duration // new shared connections take a change; open ones keep theirs
	OutputBufferLimit int64         // 0: none
	InputMemoryLimit  int64         // 0: none
}

// lim is the limits in force.
func (s *Server) lim() *Limits { return s.limits.Load() }

// SetLimits puts new limits in force: for clients already connected too, from their next
// command (a shared upstream connection keeps the command timeout it was opened with).
func (s *Server) SetLimits(l Limits) {
	if l.MaxClients < 1 {
		l.MaxClients = 1
	}
	s.limits.Store(&l)
	s.pools.timeout.Store(int64(l.CommandTimeout))
	s.input.SetLimit(l.InputMemoryLimit)
}

// proxyFamily: the proxy's own commands. PROXY INFO is INFO PROXY; PROXY CONFIG GET <pattern>
// lists the running configuration's settings whose YAML path matches the glob (secrets only as
// set or not); PROXY RELOAD re-reads the configuration (Options.Reload), as SIGHUP does, and
// answers what changed or why nothing did: it runs as the proxy's own user only.
var proxyFamily = family{
	{name: "proxy", route: routeLocal, local: cmdProxy},
}

func cmdProxy(c *client, args [][]byte) {
	switch {
	case len(args) == 2 && equalFold(args[1], "INFO"):
		c.write(c.appendText(nil, c.s.proxyInfo()))
	case len(args) == 4 && equalFold(args[1], "CONFIG") && equalFold(args[2], "GET"):
		if c.s.opts.ConfigGet == nil {
			c.write([]byte("*0\r\n"))
			return
		}
		pairs := c.s.opts.ConfigGet(string(args[3]))
		out := redcon.AppendArray(nil, 2*len(pairs))
		for _, kv := range pairs {
			out = redcon.AppendBulkString(out, kv[0])
			out = redcon.AppendBulkString(out, kv[1])
		}
		c.write(out)
	case len(args) == 2 && equalFold(args[1], "RELOAD"):
		if errReply := c.ownUserOnly(); errReply != nil {
			c.write(errReply)
			return
		}
		if c.s.opts.Reload == nil {
			c.write(redcon.AppendError(nil, "ERR this proxy has no configuration to reload"))
			return
		}
		changed, err := c.s.opts.Reload()
		if err != nil {
			c.write(redcon.AppendError(nil, "ERR config not reloaded: "+sanitizeLine(err.Error())))
			return
		}
		c.write(redcon.AppendBulkString(nil, "reloaded; changed: "+changed))
	case len(args) >= 2 && equalFold(args[1], "SLOWLOG"):
		cmdSlowlog(c, args)
	case len(args) >= 2:
		c.write(redcon.AppendError(nil, "ERR unknown subcommand or wrong number of arguments for '"+
			sanitizeLine(string(args[1]))+"'. Try PROXY INFO, PROXY CONFIG GET <pattern>, PROXY RELOAD, PROXY SLOWLOG GET|LEN|RESET."))
	default:
		c.write(redcon.AppendError(nil, "ERR wrong number of arguments for 'proxy' command"))
	}
}
