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

// setDeny marks the table's rows for names ("FLUSHALL", "CONFIG|SET", any case).
func (t *commandTable) setDeny(names []string) error {
	for _, n := range names {
		name, sub, hasSub := strings.Cut(n, "|")
		sp := t.byName[strings.ToUpper(name)]
		if sp == nil || name == "" || hasSub && (sub == "" || !containers[sp.name]) {
			return fmt.Errorf("proxy: deny: %q is not a Redis command (want NAME, or CONTAINER|SUBCOMMAND such as CONFIG|SET)", n)
		}
		if sp.deny == nil {
			sp.deny = &denyRule{subs: map[string]bool{}}
		}
		if hasSub {
			sp.deny.subs[strings.ToLower(sub)] = true
			continue
		}
		sp.deny.all = true
		if alias, ok := denyAliases[strings.ToUpper(name)]; ok {
			if a := t.byName[alias]; a.deny == nil || !a.deny.all {
				if err := t.setDeny([]string{alias}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// deniedSuffix makes a denied command's name one Redis does not know: Redis then answers it as
// it answers a command renamed away (rename-command NAME ""), with the arguments, in order with
// the client's other replies, and inside MULTI it discards the transaction (EXECABORT), as
// Redis does with a command it refuses at queueing. Whatever path the client is on (shared, own
// connection, cluster), the same bytes go upstream.
const deniedSuffix = " (denied by the proxy: clients.deny_commands)"

// denyIn replaces the batch's denied commands with their unknown-name stand-ins.
func (c *client) denyIn(cmds []redcon.Command) {
	for i := range cmds {
		args := cmds[i].Args
		sp := c.s.table.lookup(args[0])
		if sp.deny == nil || !sp.deny.matches(args) {
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
