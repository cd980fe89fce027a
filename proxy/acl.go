package proxy

import (
	"bytes"
	"sync"
	"time"
)

// aclCacheFor is how long a verdict of aclCheck stands: a user's ACL can change on Redis.
const aclCacheFor = time.Minute

// aclCheck tells whether a Redis ACL user may run the index scripts. Session writes run as the
// client's own user (its ACL applies to them as to its other commands); a user that may not run
// the scripts, or not write the index keys, would get an error where the plain write succeeds.
// Such a client's session writes are passed on plain, counted as unindexed and left to repair.
type aclCheck struct {
	probe  []byte // rewrite.Schema.ACLProbe, encoded
	probeN int

	mu      sync.Mutex
	verdict map[identity]aclVerdict
}

type aclVerdict struct {
	ok bool
	at time.Time
}

func newACLCheck(cmds [][]string) *aclCheck {
	a := &aclCheck{probeN: len(cmds), verdict: map[identity]aclVerdict{}}
	for _, c := range cmds {
		a.probe = appendCommand(a.probe, c...)
	}
	return a
}

// indexable reports whether the index scripts may run as id: the proxy's configured user is
// trusted; another user is probed on a connection of its own (once a minute at most). When
// Redis cannot be asked, the answer is yes: the writes then meet Redis' own verdict.
func (s *Server) indexable(id identity) bool {
	if id == s.defaultID {
		return true
	}
	a := s.acl
	a.mu.Lock()
	v, ok := a.verdict[id]
	a.mu.Unlock()
	if ok && time.Since(v.at) < aclCacheFor {
		return v.ok
	}
	nc, br, err := s.dialer.dial(s.ctx, poolKey{id: id}, "", false)
	if err != nil {
		return true
	}
	defer nc.Close()
	allowed := true
	err = s.dialer.exchange(nc, br, a.probe, a.probeN, func(reply []byte) error {
		if bytes.HasPrefix(reply, []byte("-NOPERM")) {
			allowed = false
		}
		return nil
	})
	if err != nil {
		return true
	}
	a.mu.Lock()
	if len(a.verdict) > 10000 {
		clear(a.verdict) // many users: forget and ask again rather than grow without bound
	}
	a.verdict[id] = aclVerdict{ok: allowed, at: time.Now()}
	a.mu.Unlock()
	if !allowed {
		s.log.Warn("ACL user may not run the index scripts; its session writes pass plain, unindexed",
			"user", id.user)
	}
	return allowed
}
