package proxy

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/tidwall/redcon"
)

// denyRule marks a command the proxy's operator took away (Options.DenyCommands): all of it, or
// some of its subcommands (lower case).
type denyRule struct {
	all  bool
	subs map[string]bool
}

func (r *denyRule) matches(args [][]byte) bool {
	return r.all || len(args) > 1 && r.subs[strings.ToLower(string(args[1]))]
}

// denyAliases are commands Redis runs under two names: denying one denies both.
var denyAliases = map[string]string{"REPLICAOF": "SLAVEOF", "SLAVEOF": "REPLICAOF"}

// denyList is the commands the operator took away, by table row (cmdSpec.idx; nil: allowed).
// It is replaced whole on a reload (Server.SetDenyCommands), never changed in place.
type denyList []*denyRule

// denyList builds the list for names ("FLUSHALL", "CONFIG|SET", any case); nil if names is empty.
func (t *commandTable) denyList(names []string) (denyList, error) {
	if len(names) == 0 {
		return nil, nil
	}
	dl := make(denyList, len(t.specs))
	for _, n := range names {
		name, sub, hasSub := strings.Cut(n, "|")
		sp := t.byName[strings.ToUpper(name)]
		if sp == nil || name == "" || hasSub && (sub == "" || !containers[sp.name]) {
			return nil, fmt.Errorf("proxy: deny: %q is not a Redis command (want NAME, or CONTAINER|SUBCOMMAND such as CONFIG|SET)", n)
		}
		specs := []*cmdSpec{sp}
		if alias, ok := denyAliases[strings.ToUpper(name)]; ok && !hasSub {
			specs = append(specs, t.byName[alias])
		}
		for _, sp := range specs {
			if dl[sp.idx] == nil {
				dl[sp.idx] = &denyRule{subs: map[string]bool{}}
			}
			if hasSub {
				dl[sp.idx].subs[strings.ToLower(sub)] = true
			} else {
				dl[sp.idx].all = true
			}
		}
	}
	return dl, nil
}

// CheckDenyCommands reports whether SetDenyCommands would take names, changing nothing.
func (s *Server) CheckDenyCommands(names []string) error {
	_, err := s.table.denyList(names)
	return err
}

// SetDenyCommands puts a new deny list in force (clients.deny_commands, on a reload): for
// clients already connected too, from their next batch. An unknown name changes nothing.
func (s *Server) SetDenyCommands(names []string) error {
	dl, err := s.table.denyList(names)
	if err != nil {
		return err
	}
	s.deny.Store(&dl)
	return nil
}

// deniedSuffix makes a denied command's name one Redis does not know: Redis then answers it as
// it answers a command renamed away (rename-command NAME ""), with the arguments, in order with
// the client's other replies, and inside MULTI it discards the transaction (EXECABORT), as
// Redis does with a command it refuses at queueing. Whatever path the client is on (shared, own
// connection, cluster), the same bytes go upstream.
const deniedSuffix = " (denied by the proxy: clients.deny_commands)"

// denyIn replaces the batch's denied commands with their unknown-name stand-ins.
func (c *client) denyIn(dl denyList, cmds []redcon.Command) {
	for i := range cmds {
		args := cmds[i].Args
		sp := c.s.table.lookup(args[0])
		if r := dl[sp.idx]; r == nil || !r.matches(args) {
			continue
		}
		c.s.m.denied.Inc()
		name := append(bytes.ToUpper(args[0]), deniedSuffix...)
		stand := make([][]byte, len(args))
		stand[0] = name
		copy(stand[1:], args[1:])
		raw := redcon.AppendArray(nil, len(stand))
		for _, a := range stand {
			raw = redcon.AppendBulk(raw, a)
		}
		cmds[i] = redcon.Command{Raw: raw, Args: stand}
	}
}
