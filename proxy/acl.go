package proxy

import (
	"bytes"
	"sync"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/resp"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// aclCacheFor is how long a verdict of aclCheck stands: a user's ACL can change on Redis.
const aclCacheFor = time.Minute

// aclCheck tells whether a Redis ACL user may run the index scripts, from a probe sent as that
// user right after the command that logs it in (AUTH, HELLO ... AUTH), in the same write.
// Session writes run as the client's own user (its ACL applies to them as to its other
// commands); a user that may not run the scripts, or not read and write the index keys, would
// get an error where the plain write succeeds. Such a client's session writes are passed on
// plain, counted as unindexed and left to repair.
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
		a.probe = resp.AppendCommand(a.probe, c...)
	}
	return a
}

// aclKnown is what id may do if that is known: the proxy's configured user may do everything;
// another user's verdict stands for a minute after its probe.
func (s *Server) aclKnown(a *aclCheck, id identity) (aclVerdict, bool) {
	if id == s.defaultID {
		return aclAllowed, true
	}
	// a (the check of the batch's rules): a rules change asks again, other scripts, other keys
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.verdict[id]
	if !ok || time.Since(v.at) >= aclCacheFor {
		return aclAllowed, false
	}
	return v, true
}

// aclLearn records a probe's verdict on id.
func (s *Server) aclLearn(a *aclCheck, id identity, v aclVerdict) aclVerdict {
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

// aclJudge reads the probe's replies (rewrite.Schema.ACLProbe): a NOPERM error denies what
// its command stands for.
type aclJudge struct {
	i         int
	denied    [rewrite.ACLProbeScripts]bool
	keyDenied bool
}

func (j *aclJudge) reply(reply []byte) {
	if bytes.HasPrefix(reply, []byte("-NOPERM")) {
		if j.i < len(j.denied) {
			j.denied[j.i] = true
		} else {
			j.keyDenied = true
		}
	}
	j.i++
}

func (j *aclJudge) verdict() aclVerdict {
	return aclVerdict{shared: !j.keyDenied && !j.denied[0], dedicated: !j.keyDenied && !j.denied[1], at: time.Now()}
}
