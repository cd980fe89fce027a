package proxy

import (
	"bytes"
	"sync"
	"time"

	"github.com/sessionproxy/sessionproxy/rewrite"
)

// aclCacheFor is how long a verdict of aclCheck stands: a user's ACL can change on Redis.
const aclCacheFor = time.Minute

// aclCheck tells whether a Redis ACL user may run the index scripts. Session writes run as the
// client's own user (its ACL applies to them as to its other commands); a user that may not run
// the scripts, or not read and write the index keys, would get an error where the plain write
// succeeds. Such a client's session writes are passed on plain, counted as unindexed and left
// to repair.
type aclCheck struct {
	probe  []byte // rewrite.Schema.ACLProbe, encoded
	probeN int

	mu      sync.Mutex
	verdict map[identity]aclVerdict
}

// aclVerdict is what a user may do: run the scripts by SHA on the shared path (EVALSHA), and by
// body on a connection of its own (EVAL), each with the index keys' access.
type aclVerdict struct {
	shared, dedicated bool
	at                time.Time
}

var aclAllowed = aclVerdict{shared: true, dedicated: true}

func newACLCheck(cmds [][]string) *aclCheck {
	a := &aclCheck{probeN: len(cmds), verdict: map[identity]aclVerdict{}}
	for _, c := range cmds {
		a.probe = appendCommand(a.probe, c...)
	}
	return a
}

// aclFor is what id may do: the proxy's configured user is trusted; another user is probed on
// a connection of its own (at most once a minute), which costs its first AUTH through the proxy
// a dial and a round trip. When Redis cannot be asked, the answer is yes: the writes then meet
// Redis' own verdict.
func (s *Server) aclFor(id identity) aclVerdict {
	if id == s.defaultID {
		return aclAllowed
	}
	a := s.acl
	a.mu.Lock()
	v, ok := a.verdict[id]
	a.mu.Unlock()
	if ok && time.Since(v.at) < aclCacheFor {
		return v
	}
	nc, br, err := s.dialer.dial(s.ctx, poolKey{id: id}, "", false)
	if err != nil {
		return aclAllowed
	}
	defer nc.Close()
	var denied [rewrite.ACLProbeScripts]bool
	keysOK, i := true, 0
	err = s.dialer.exchange(nc, br, a.probe, a.probeN, func(reply []byte) error {
		if bytes.HasPrefix(reply, []byte("-NOPERM")) {
			if i < len(denied) {
				denied[i] = true
			} else {
				keysOK = false
			}
		}
		i++
		return nil
	})
	if err != nil {
		return aclAllowed
	}
	v = aclVerdict{shared: keysOK && !denied[0], dedicated: keysOK && !denied[1], at: time.Now()}
	a.mu.Lock()
	if len(a.verdict) > 10000 {
		clear(a.verdict) // many users: forget and ask again rather than grow without bound
	}
	a.verdict[id] = v
	a.mu.Unlock()
	if !v.shared || !v.dedicated {
		s.log.Warn("ACL user may not run the index scripts everywhere; those session writes pass plain, unindexed",
			"user", id.user, "evalsha", v.shared, "eval", v.dedicated)
	}
	return v
}
