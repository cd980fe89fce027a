package proxy

import (
	"errors"

	"github.com/tidwall/redcon"
)

// The client side's replies for commands the upstream did not answer: the upstream layer
// reports an error (request.err, a dial's error), and these turn it into Redis-style error
// replies, one per command.

// fillLost completes r's replies after a connection failure: an error reply for every command
// the connection did not answer.
func (r *request) fillLost() {
	if r.err == nil {
		return
	}
	for r.streamed+len(r.ends) < len(r.cmds) {
		r.reply = appendLostReply(r.reply, r.err)
		r.ends = append(r.ends, len(r.reply))
	}
}

// appendLostReplies appends n error replies for commands lost to cause.
func appendLostReplies(dst []byte, n int, cause error) []byte {
	for range n {
		dst = appendLostReply(dst, cause)
	}
	return dst
}

// appendLostReply is the reply for a command whose fate is unknown because the upstream failed.
func appendLostReply(dst []byte, cause error) []byte {
	var re *replyError
	if errors.As(cause, &re) {
		return append(dst, re.raw...)
	}
	msg := ErrUpstreamLost.Error()
	if cause != nil && !errors.Is(cause, ErrUpstreamLost) {
		msg += ": " + hideAddrs(cause).Error() // clients see why, not where (README)
	}
	return redcon.AppendError(dst, "ERR "+sanitizeLine(msg))
}

// sanitizeLine keeps an error message on one RESP line.
func sanitizeLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\r' || c == '\n' {
			b[i] = ' '
		}
	}
	return string(b)
}
