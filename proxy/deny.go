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

// denyList is the commands the operator took away, by table row (cmdSpec.idx; nil: allowed),
// and the ones renamed (Redis' rename-command): a client's new name -> the command's own. It is
// replaced whole on a reload (Server.SetDenyCommands), never changed in place.
type denyList struct {
	rules   []*denyRule
	renames map[string][]byte // lower-case new name -> the command's name
	renamed []bool            // by table row: taken away under its own name by a rename
}

// active reports whether the list does anything.
func (dl *denyList) active() bool { return dl.rules != nil || dl.renames != nil }

// denyList builds the list for names ("FLUSHALL", "CONFIG|SET", any case) and renames ("NAME
// NEWNAME", or "NAME" alone: taken away, as rename-command NAME ""). Empty when both are.
func (t *commandTable) denyList(names, renames []string) (*denyList, error) {
	dl := &denyList{}
	for _, rn := range renames {
		f := strings.Fields(rn)
		var sp *cmdSpec
		if len(f) > 0 {
			sp = t.byName[strings.ToUpper(f[0])]
		}
		if sp == nil || len(f) > 2 || strings.Contains(f[0], "|") {
			return nil, fmt.Errorf("proxy: rename: %q is not \"NAME NEWNAME\" or \"NAME\" for a Redis command", rn)
		}
		if dl.renamed == nil {
			dl.renamed = make([]bool, len(t.specs))
		}
		dl.renamed[sp.idx] = true
		if len(f) == 2 {
			if t.byName[strings.ToUpper(f[1])] != nil {
				return nil, fmt.Errorf("proxy: rename: %q: %s is a Redis command already", rn, f[1])
			}
			if dl.renames == nil {
				dl.renames = map[string][]byte{}
			}
			if _, dup := dl.renames[strings.ToLower(f[1])]; dup {
				return nil, fmt.Errorf("proxy: rename: %s is given twice", f[1])
			}
			dl.renames[strings.ToLower(f[1])] = []byte(strings.ToUpper(f[0]))
		}
	}
	if len(names) == 0 {
		if dl.renamed != nil {
			dl.rules = make([]*denyRule, len(t.specs))
		}
		return dl, nil
	}
	dl.rules = make([]*denyRule, len(t.specs))
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
			if dl.rules[sp.idx] == nil {
				dl.rules[sp.idx] = &denyRule{subs: map[string]bool{}}
			}
			if hasSub {
				dl.rules[sp.idx].subs[strings.ToLower(sub)] = true
			} else {
				dl.rules[sp.idx].all = true
			}
		}
	}
	return dl, nil
}

// CheckDenyCommands reports whether SetDenyCommands would take names and renames, changing nothing.
func (s *Server) CheckDenyCommands(names, renames []string) error {
	_, err := s.table.denyList(names, renames)
	return err
}

// SetDenyCommands puts a new deny list and renames in force (clients.deny_commands,
// clients.rename_commands, on a reload): for clients already connected too, from their next
// batch. An unknown name changes nothing.
func (s *Server) SetDenyCommands(names, renames []string) error {
	dl, err := s.table.denyList(names, renames)
	if err != nil {
		return err
	}
	s.deny.Store(dl)
	return nil
}

// deniedSuffix makes a denied command's name one Redis does not know: Redis then answers it as
// it answers a command renamed away (rename-command NAME ""), with the arguments, in order with
// the client's other replies, and inside MULTI it discards the transaction (EXECABORT), as
// Redis does with a command it refuses at queueing. Whatever path the client is on (shared, own
// connection, cluster), the same bytes go upstream.
const deniedSuffix = " (denied by the proxy: clients.deny_commands)"

// renamedSuffix is deniedSuffix for a command renamed away (clients.rename_commands).
const renamedSuffix = " (renamed by the proxy: clients.rename_commands)"

// denyIn replaces the batch's denied commands with their unknown-name stand-ins, and renamed
// ones with the commands they stand for.
func (c *client) denyIn(dl *denyList, cmds []redcon.Command) {
	for i := range cmds {
		args := cmds[i].Args
		if dl.renames != nil {
			if orig, ok := dl.renames[strings.ToLower(string(args[0]))]; ok {
				cmds[i] = withName(orig, args)
				continue
			}
		}
		sp := c.s.table.lookup(args[0])
		suffix := deniedSuffix
		switch r := dl.rules[sp.idx]; {
		case dl.renamed != nil && dl.renamed[sp.idx]:
			suffix = renamedSuffix
		case r == nil || !r.matches(args):
			continue
		}
		c.s.m.denied.Inc()
		cmds[i] = withName(append(bytes.ToUpper(args[0]), suffix...), args)
	}
}

// withName is args as a command with name instead of args[0].
func withName(name []byte, args [][]byte) redcon.Command {
	stand := make([][]byte, len(args))
	stand[0] = name
	copy(stand[1:], args[1:])
	raw := redcon.AppendArray(nil, len(stand))
	for _, a := range stand {
		raw = redcon.AppendBulk(raw, a)
	}
	return redcon.Command{Raw: raw, Args: stand}
}
