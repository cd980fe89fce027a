package resp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// This file normalizes the bytes a client sends into canonical RESP multibulk, reproducing
// Redis 7.0's request parser (networking.c processInlineBuffer / processMultibulkBuffer and
// sds.c sdssplitargs): the same limits, the same error texts, the same quirks. redcon then
// takes the commands as the normalizer split them (Conn.ReadBatch, batch.go), or parses the
// canonical form, where its own parser and Redis' agree.
//
// Quirks kept on purpose, because Redis has them:
//   - Redis searches lines with strchr, which stops at a NUL byte. A NUL before the line's
//     terminator ('\n' inline, '\r' for "*<n>" and "$<n>") therefore hides the terminator and
//     every later byte: the client hangs until more than MaxInlineLen bytes of the request are
//     buffered, then gets the "too big ..." error. We count those bytes without keeping them.
//   - After a "*<n>" or "$<n>" line Redis skips the '\r' and whatever one byte follows it, and
//     after bulk data it skips two bytes without looking at them.
//   - The '$' check comes only after the length line's '\r' (or the "too big" limit) is found.
//   - "expected '$', got '%c'" goes through addReplyErrorFormat, which turns '\r' and '\n'
//     into spaces; other bytes (also >= 0x80) are sent as they are. A NUL cannot get there.
//
// Deliberate differences:
//   - Redis checks the line limits only when a read(2) ends without a terminator in the
//     buffer, so whether a line of more than MaxInlineLen bytes is refused depends on how the
//     kernel chunked it (with 16 KiB reads a 70000-byte inline line sent at once passes). We
//     refuse a line as soon as MaxInlineLen+1 bytes of it are seen without its terminator,
//     which is what Redis does when the bytes trickle in, and is independent of chunking.
//   - Redis 7 refuses "*<n>" with n > 10 ("Protocol error: unauthenticated multibulk length")
//     and "$<n>" with n > 16384 ("Protocol error: unauthenticated bulk length") while the
//     client has not authenticated and a password is required. The normalizer does not know
//     the authentication state, so it does not apply these limits; the proxy may.

// Limits bound what a client may send, like Redis' proto-max-bulk-len etc.
type Limits struct {
	MaxBulkLen      int64 // largest bulk string; Redis proto-max-bulk-len (default 512MiB)
	MaxMultibulkLen int64 // largest multibulk count (Redis 7: INT_MAX)
	MaxInlineLen    int   // PROTO_INLINE_MAX_SIZE (64KiB): longest inline line / length line
	// MaxQueryBuf, if > 0, is Redis' client-query-buffer-limit: a bulk that cannot fit in it
	// ends the stream (a silent ProtocolError), as Redis closes such a client without a reply.
	MaxQueryBuf int64
}

// DefaultLimits returns Redis 7.0's defaults. The normalizer uses a Limits value exactly as
// given (a zero MaxBulkLen allows only empty bulks), so start from these.
func DefaultLimits() Limits {
	return Limits{
		MaxBulkLen:      512 << 20,
		MaxMultibulkLen: 1<<31 - 1,
		MaxInlineLen:    64 << 10,
	}
}

// ProtocolError is a client protocol violation; Msg is Redis's text without the "ERR " prefix,
// e.g. "Protocol error: invalid bulk length". A Silent one ends the connection without a reply.
type ProtocolError struct {
	Msg    string
	Silent bool
}

// Error returns Msg with the package prefix.
func (e *ProtocolError) Error() string { return "resp: " + e.Msg }

// Reply returns the exact RESP error reply Redis sends: "-ERR Protocol error: ...\r\n".
func (e *ProtocolError) Reply() []byte {
	b := make([]byte, 0, len("-ERR \r\n")+len(e.Msg))
	b = append(b, "-ERR "...)
	b = append(b, e.Msg...)
	return append(b, "\r\n"...)
}

// The texts of networking.c, byte for byte.
var (
	errTooBigInline   = &ProtocolError{Msg: "Protocol error: too big inline request"}
	errUnbalanced     = &ProtocolError{Msg: "Protocol error: unbalanced quotes in request"}
	errTooBigMbulk    = &ProtocolError{Msg: "Protocol error: too big mbulk count string"}
	errInvalidMbulk   = &ProtocolError{Msg: "Protocol error: invalid multibulk length"}
	errTooBigBulk     = &ProtocolError{Msg: "Protocol error: too big bulk count string"}
	errInvalidBulkLen = &ProtocolError{Msg: "Protocol error: invalid bulk length"}
	errQueryBufLimit  = &ProtocolError{Msg: "query buffer limit reached", Silent: true}
	// ErrInputMemory ends a connection whose incomplete command took the bytes held for all
	// connections past their Budget.
	ErrInputMemory = &ProtocolError{Msg: "input memory limit reached (all clients)", Silent: true}
	errUnauthMbulk = &ProtocolError{Msg: "Protocol error: unauthenticated multibulk length"}
	errUnauthBulk  = &ProtocolError{Msg: "Protocol error: unauthenticated bulk length"}
)

// errExpectedDollar is "Protocol error: expected '$', got '%c'" as addReplyErrorFormat sends it.
func errExpectedDollar(c byte) *ProtocolError {
	if c == '\r' || c == '\n' {
		c = ' '
	}
	return &ProtocolError{Msg: "Protocol error: expected '$', got '" + string([]byte{c}) + "'"}
}

// reqState is where the normalizer stands in the client's stream.
type reqState uint8

const (
	stStart    reqState = iota // between requests
	stInline                   // inside an inline line, looking for '\n'
	stCount                    // inside "*<n>", looking for '\r'
	stCountEnd                 // '\r' of "*<n>" seen; one more byte to skip
	stBulkLen                  // inside "$<n>", looking for '\r'
	stBulkEnd                  // '\r' of "$<n>" seen; one more byte to skip
	stBulkData                 // streaming bulk data
	stBulkCRLF                 // skipping the two bytes after bulk data
	stHidden                   // a NUL hid the line's terminator: counting up to the limit
	stDead                     // a protocol error was returned
)

// maxNumLen is LONG_STR_SIZE-1: string2ll refuses 21 or more bytes.
const maxNumLen = 20

// Normalizer is an incremental parser of a client's byte stream that emits canonical RESP.
// It is not safe for concurrent use.
type Normalizer struct {
	lim   Limits
	state reqState
	err   *ProtocolError

	lineLen int             // bytes of the current line seen so far, its first byte ('*', '$') included
	first   byte            // first byte of a "$<n>" line
	num     [maxNumLen]byte // the first bytes after '*' or '$' (string2ll input)
	hidden  *ProtocolError  // in stHidden: the error once the limit is passed

	args   int64 // bulks still expected in the current multibulk
	remain int64 // bulk data bytes still expected
	skip   int   // bytes still to skip in stBulkCRLF

	line []byte // inline line fragment carried between Feed calls (at most MaxInlineLen)

	bound int // the last Feed's dst length at its last command boundary; -1: none
	used  int // bytes of src the last Feed consumed (less than all: it stopped after a command)
	// unauth: the client has not authenticated to a server that requires it. Redis' stricter
	// limits apply (a multibulk of more than 10, a bulk over 16 KiB end the connection), and
	// Feed stops after each command: whether the next one is still unauthenticated depends on
	// what the caller does with this one (an AUTH).
	unauth bool

	marks // where whole commands and their arguments lie in dst (Conn.ReadBatch)
}

// SetUnauthenticated switches Redis' limits for clients that have not authenticated on or off
// for the next Feed calls (Conn.Unauthenticated).
func (n *Normalizer) SetUnauthenticated(on bool) { n.unauth = on }

// Used is how many bytes of its src the last Feed consumed: all of them, unless it stopped
// after a whole command because the client is unauthenticated (the rest is for a later call).
func (n *Normalizer) Used() int { return n.used }

// Redis' limits before authentication (networking.c).
const (
	unauthMbulk = 10
	unauthBulk  = 16384
)

// Boundary is the length dst had, in the last Feed call, at the last command boundary: the
// output up to it is whole commands. -1 if that call passed none.
func (n *Normalizer) Boundary() int { return n.bound }

// NewNormalizer returns a normalizer for one client stream.
func NewNormalizer(lim Limits) *Normalizer {
	return &Normalizer{lim: lim}
}

// keepLine is the largest inline fragment buffer kept for reuse after a line is done.
const keepLine = 4 << 10

// Feed consumes src (the next bytes from the client) and appends to dst the canonical form of
// every byte it could process: multibulk commands re-emitted as "*<n>\r\n" + "$<len>\r\n<data>\r\n"
// with canonical decimal lengths and exact CRLFs; inline commands split with Redis' sdssplitargs
// rules and emitted as multibulk; empty multibulks (*0, *-1) and empty inline lines dropped.
//
// A command may be emitted in pieces across calls: headers whole, bulk data as it arrives, the
// CRLF after the data once the two bytes Redis skips there have arrived. On a protocol error it
// returns what it emitted before the error and the error (a *ProtocolError); the stream is then
// dead and further calls return the same error.
func (n *Normalizer) Feed(dst, src []byte) ([]byte, error) {
	if n.state == stDead {
		return dst, n.err
	}
	n.bound = -1
	if n.state == stStart {
		n.bound = len(dst)
	}
	start := n.bound
	i := 0
	// src[run:i] is canonical input that the fast paths passed over and that is not in dst
	// yet: copied in one piece when the command ends, the slow path starts or src ends,
	// rather than an append per argument (a 1M-key DEL is 1M of them).
	run := -1
	for i < len(src) {
		if n.unauth && n.state == stStart && n.bound > start {
			break // one whole command: the caller handles it before the next is parsed
		}
		switch n.state {
		case stStart:
			n.lineLen = 0
			if src[i] == '*' {
				if v, j, ok := n.canonicalLine(src, i, n.maxMbulk()); ok && v > 0 {
					// Fast path: the line is already canonical; copy it (run: not yet).
					run = i
					if n.track {
						n.begin(len(dst))
					}
					i = j
					n.args = v
					n.state = stBulkLen
					continue
				}
				n.state = stCount
				n.lineLen = 1
				i++
			} else {
				n.state = stInline
			}

		case stCount, stBulkLen:
			if n.state == stBulkLen && n.lineLen == 0 && src[i] == '$' {
				// Fast path: a whole canonical bulk ("$<len>\r\n<data>\r\n") is copied as is.
				if v, j, ok := n.canonicalLine(src, i, n.fastBulk()); ok && int64(len(src)-j) >= v+2 &&
					src[j+int(v)] == '\r' && src[j+int(v)+1] == '\n' {
					if run < 0 {
						run = i
					}
					if n.track && n.cur.ok {
						at := len(dst) + j - run // where the data lands once src[run:] is copied
						n.mk = append(n.mk, at, at+int(v))
					}
					j += int(v) + 2
					i = j
					if n.args--; n.args == 0 {
						dst, run = append(dst, src[run:i]...), -1
						n.state, n.bound = stStart, len(dst)
						if n.track {
							n.end(len(dst))
						}
					}
					continue
				}
			}
			if run >= 0 {
				dst, run = append(dst, src[run:i]...), -1
			}
			// Scan the length line for '\r'. A NUL stops Redis' strchr: the terminator is hidden.
			lineLen, limit := n.lineLen, n.lim.MaxInlineLen
			for i < len(src) {
				c := src[i]
				if c == '\r' {
					i++
					if lineLen == 0 {
						n.first = '\r' // "$<n>" line that starts with its terminator
					}
					n.state++ // stCountEnd or stBulkEnd
					break
				}
				if c == 0 {
					n.hide()
					break
				}
				if lineLen >= limit {
					n.lineLen = lineLen
					return dst, n.fail(n.tooBig())
				}
				if lineLen == 0 {
					n.first = c
				} else if lineLen <= maxNumLen {
					n.num[lineLen-1] = c
				}
				lineLen++
				i++
			}
			n.lineLen = lineLen

		case stCountEnd:
			i++ // the byte after '\r', whatever it is
			ll, ok := n.lineNum()
			if !ok || ll > n.lim.MaxMultibulkLen {
				return dst, n.fail(errInvalidMbulk)
			}
			if n.unauth && ll > unauthMbulk {
				return dst, n.fail(errUnauthMbulk)
			}
			if ll <= 0 {
				n.state, n.bound = stStart, len(dst) // "*0", "*-1": Redis ignores the request
				continue
			}
			if n.track {
				n.begin(len(dst))
			}
			dst = append(dst, '*')
			dst = strconv.AppendInt(dst, ll, 10)
			dst = append(dst, '\r', '\n')
			n.args = ll
			n.state, n.lineLen = stBulkLen, 0

		case stBulkEnd:
			i++ // the byte after '\r', whatever it is
			if n.first != '$' {
				return dst, n.fail(errExpectedDollar(n.first))
			}
			ll, ok := n.lineNum()
			if !ok || ll < 0 || ll > n.lim.MaxBulkLen {
				return dst, n.fail(errInvalidBulkLen)
			}
			if n.unauth && ll > unauthBulk {
				return dst, n.fail(errUnauthBulk)
			}
			if n.lim.MaxQueryBuf > 0 && ll+2 > n.lim.MaxQueryBuf {
				return dst, n.fail(errQueryBufLimit)
			}
			dst = append(dst, '$')
			dst = strconv.AppendInt(dst, ll, 10)
			dst = append(dst, '\r', '\n')
			if n.track && n.cur.ok {
				n.mk = append(n.mk, len(dst), len(dst)+int(ll))
			}
			n.remain = ll
			n.state = stBulkData
			if ll == 0 {
				n.state, n.skip = stBulkCRLF, 2
			}

		case stBulkData:
			k := len(src) - i
			if int64(k) > n.remain {
				k = int(n.remain)
			}
			dst = append(dst, src[i:i+k]...)
			i += k
			n.remain -= int64(k)
			if n.remain == 0 {
				n.state, n.skip = stBulkCRLF, 2
			}

		case stBulkCRLF:
			k := min(n.skip, len(src)-i)
			i += k
			n.skip -= k
			if n.skip == 0 {
				dst = append(dst, '\r', '\n')
				n.args--
				if n.args == 0 {
					n.state, n.bound = stStart, len(dst)
					if n.track {
						n.end(len(dst))
					}
				} else {
					n.state, n.lineLen = stBulkLen, 0
				}
			}

		case stInline:
			var perr *ProtocolError
			from := len(dst)
			dst, i, perr = n.inline(dst, src, i)
			if perr != nil {
				return dst, n.fail(perr)
			}
			if n.state == stStart {
				n.bound = len(dst)
				if n.track && len(dst) > from {
					n.cur = cmdRec{start: from, mkFrom: len(n.mk)} // not ok: the reader parses it
					n.end(len(dst))
				}
			}

		case stHidden:
			// Everything counts towards the limit now, newlines included, like Redis'
			// sdslen(querybuf)-qb_pos.
			if len(src)-i > n.lim.MaxInlineLen-n.lineLen {
				return dst, n.fail(n.hidden)
			}
			n.lineLen += len(src) - i
			i = len(src)
		}
	}
	if run >= 0 {
		dst = append(dst, src[run:i]...)
	}
	n.used = i
	return dst, nil
}

// fastBulk is the largest bulk the fast path may copy: larger ones take the checked path.
func (n *Normalizer) fastBulk() int64 {
	m := n.lim.MaxBulkLen
	if q := n.lim.MaxQueryBuf; q > 0 && q-2 < m {
		m = q - 2
	}
	if n.unauth {
		m = min(m, unauthBulk)
	}
	return m
}

// maxMbulk is the largest multibulk count the fast path may copy.
func (n *Normalizer) maxMbulk() int64 {
	if n.unauth {
		return min(n.lim.MaxMultibulkLen, unauthMbulk)
	}
	return n.lim.MaxMultibulkLen
}

// inline consumes bytes of an inline line from src[i:]; when the line is complete it emits the
// command and returns to stStart.
func (n *Normalizer) inline(dst, src []byte, i int) ([]byte, int, *ProtocolError) {
	rest := src[i:]
	nl := bytes.IndexByte(rest, '\n')
	seg := rest
	if nl >= 0 {
		seg = rest[:nl]
	}
	if bytes.IndexByte(seg, 0) >= 0 {
		n.hide() // stHidden counts from src[i] on; n.lineLen has the earlier fragment
		n.line = n.line[:0]
		return dst, i, nil
	}
	if len(seg) > n.lim.MaxInlineLen-n.lineLen {
		return dst, i, errTooBigInline
	}
	if nl < 0 {
		n.line = append(n.line, seg...)
		n.lineLen += len(seg)
		return dst, len(src), nil
	}
	line := seg
	if n.lineLen > 0 {
		n.line = append(n.line, seg...)
		line = n.line
	}
	i += nl + 1
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	dst, perr := appendInline(dst, line)
	if cap(n.line) > keepLine {
		n.line = nil
	}
	n.line = n.line[:0]
	n.state, n.lineLen = stStart, 0
	return dst, i, perr
}

// canonicalLine reports whether src[i:] starts with a whole length line in canonical form:
// '*' or '$', a decimal 0 <= v <= limit without sign or leading zeros, "\r\n", and no longer
// than MaxInlineLen before its '\r'. It returns v and the index after the line. Anything else
// (including every error) is left to the byte-by-byte path.
func (n *Normalizer) canonicalLine(src []byte, i int, limit int64) (int64, int, bool) {
	j := i + 1
	if j >= len(src) {
		return 0, 0, false
	}
	var v int64
	switch c := src[j]; {
	case c == '0':
		j++
	case c >= '1' && c <= '9':
		// At most 18 digits: no overflow; longer lines take the slow path.
		for end := min(len(src), j+18); j < end && src[j] >= '0' && src[j] <= '9'; j++ {
			v = v*10 + int64(src[j]-'0')
		}
	default:
		return 0, 0, false
	}
	if j+1 >= len(src) || src[j] != '\r' || src[j+1] != '\n' || v > limit || j-i > n.lim.MaxInlineLen {
		return 0, 0, false
	}
	return v, j + 2, true
}

// hide enters stHidden for the current line: its terminator is behind a NUL.
func (n *Normalizer) hide() {
	n.hidden = n.tooBig()
	n.state = stHidden
}

// tooBig is the error for a line of the current state that outgrew MaxInlineLen.
func (n *Normalizer) tooBig() *ProtocolError {
	switch n.state {
	case stCount:
		return errTooBigMbulk
	case stBulkLen:
		return errTooBigBulk
	default:
		return errTooBigInline
	}
}

func (n *Normalizer) fail(err *ProtocolError) *ProtocolError {
	n.state, n.err = stDead, err
	n.line = nil
	return err
}

// lineNum parses the bytes between the first byte and '\r' of the current length line.
func (n *Normalizer) lineNum() (int64, bool) {
	l := n.lineLen - 1
	if l < 0 || l > maxNumLen {
		return 0, false
	}
	return ParseInt(n.num[:l])
}

// ParseInt parses an integer as Redis' util.c string2ll does: optional '-', no '+', no leading
// zeros except "0", no spaces, fits int64, at most 20 bytes.
func ParseInt(s []byte) (int64, bool) {
	if len(s) == 0 || len(s) > maxNumLen {
		return 0, false
	}
	if len(s) == 1 && s[0] == '0' {
		return 0, true
	}
	neg := s[0] == '-'
	if neg {
		s = s[1:]
		if len(s) == 0 {
			return 0, false
		}
	}
	if s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	var v uint64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<64-1)/10 || v*10 > 1<<64-1-d {
			return 0, false
		}
		v = v*10 + d
	}
	if neg {
		if v > 1<<63 {
			return 0, false
		}
		return -int64(v), true // -(1<<63) wraps to itself, which is right
	}
	if v > 1<<63-1 {
		return 0, false
	}
	return int64(v), true
}

// appendInline splits an inline line (without its "\r\n") like sdssplitargs and appends it as
// a multibulk command; an empty argument list appends nothing.
func appendInline(dst, line []byte) ([]byte, *ProtocolError) {
	_, argc, ok := splitArgs(nil, line, false)
	if !ok {
		return dst, errUnbalanced
	}
	if argc == 0 {
		return dst, nil
	}
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(argc), 10)
	dst = append(dst, '\r', '\n')
	dst, _, _ = splitArgs(dst, line, true)
	return dst, nil
}

// isSpaceC is C isspace in the "C" locale (Redis never sets LC_CTYPE).
func isSpaceC(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// Bytes at which splitArgs must look closer, outside quotes and inside "..." and '...'.
var stopPlain, stopDouble, stopSingle [256]bool

func init() {
	for _, c := range []byte{' ', '\n', '\r', '\t', 0, '"', '\''} {
		stopPlain[c] = true
	}
	for _, c := range []byte{'\\', '"', 0} {
		stopDouble[c] = true
	}
	for _, c := range []byte{'\\', '\'', 0} {
		stopSingle[c] = true
	}
}

// splitArgs is sds.c sdssplitargs over line, which Redis sees as a C string (the caller
// guarantees no NUL; the end of line reads as NUL). It counts the arguments and reports
// unbalanced quotes; with emit it also appends each argument as "$<len>\r\n<arg>\r\n".
func splitArgs(dst, line []byte, emit bool) ([]byte, int, bool) {
	at := func(p int) byte { // *p in C
		if p < len(line) {
			return line[p]
		}
		return 0
	}
	argc := 0
	p := 0
	for {
		for p < len(line) && isSpaceC(line[p]) {
			p++
		}
		if p >= len(line) {
			return dst, argc, true
		}
		start := len(dst)
		inq, insq := false, false
		for done := false; !done; {
			// Copy a run of bytes that need no decision at once.
			stop := &stopPlain
			if inq {
				stop = &stopDouble
			} else if insq {
				stop = &stopSingle
			}
			if q := p; q < len(line) && !stop[line[q]] {
				for q < len(line) && !stop[line[q]] {
					q++
				}
				if emit {
					dst = append(dst, line[p:q]...)
				}
				p = q
				continue
			}
			c := at(p)
			switch {
			case inq:
				switch {
				case c == '\\' && at(p+1) == 'x' && isHexDigit(at(p+2)) && isHexDigit(at(p+3)):
					if emit {
						dst = append(dst, hexVal(at(p+2))<<4|hexVal(at(p+3)))
					}
					p += 3
				case c == '\\' && at(p+1) != 0:
					p++
					c = line[p]
					switch c {
					case 'n':
						c = '\n'
					case 'r':
						c = '\r'
					case 't':
						c = '\t'
					case 'b':
						c = '\b'
					case 'a':
						c = '\a'
					}
					if emit {
						dst = append(dst, c)
					}
				case c == '"':
					// A closing quote must be followed by a space or nothing at all.
					if next := at(p + 1); next != 0 && !isSpaceC(next) {
						return dst, argc, false
					}
					done = true
				case c == 0:
					return dst, argc, false // unterminated quotes
				default:
					if emit {
						dst = append(dst, c)
					}
				}
			case insq:
				switch {
				case c == '\\' && at(p+1) == '\'':
					p++
					if emit {
						dst = append(dst, '\'')
					}
				case c == '\'':
					if next := at(p + 1); next != 0 && !isSpaceC(next) {
						return dst, argc, false
					}
					done = true
				case c == 0:
					return dst, argc, false
				default:
					if emit {
						dst = append(dst, c)
					}
				}
			default:
				switch c {
				case ' ', '\n', '\r', '\t', 0: // not '\v' or '\f': those only count between args
					done = true
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					if emit {
						dst = append(dst, c)
					}
				}
			}
			if at(p) != 0 {
				p++
			}
		}
		argc++
		if emit {
			dst = insertBulkHeader(dst, start)
		}
	}
}

// insertBulkHeader turns dst[start:] (an argument's bytes) into "$<len>\r\n<arg>\r\n".
func insertBulkHeader(dst []byte, start int) []byte {
	l := len(dst) - start
	var hb [24]byte
	h := append(hb[:0], '$')
	h = strconv.AppendInt(h, int64(l), 10)
	h = append(h, '\r', '\n')
	dst = append(dst, h...)
	copy(dst[start+len(h):], dst[start:start+l])
	copy(dst[start:], h)
	return append(dst, '\r', '\n')
}

// Conn wraps a client net.Conn so that Read returns normalized bytes (see Normalizer).
//
// When the normalizer reports a protocol error, Read first returns the bytes normalized before
// it (if any); the next Read writes the error's Reply to the client, as Redis does before it
// closes the connection, and returns the *ProtocolError. Write is serialized with a mutex
// because a relay goroutine may write while the reader goroutine sends that reply.
type Conn struct {
	net.Conn

	wmu sync.Mutex // serializes writes to Conn

	// Owned by the reader goroutine.
	n          *Normalizer
	raw        []byte // read buffer (sizeRaw)
	smallReads int    // reads in a row into a grown raw that connReadMin would have held
	bigRaw     []byte // read buffer while a large command comes in; nil otherwise
	out        []byte // normalized bytes not yet returned: out[off:]
	off        int
	ready      int // out[:ready] is whole commands; the rest is held until its command is whole
	// held is the earlier part of a large command that came in before out, in full chunks
	// of about chunkSize bytes: it grows without copying what it holds (a client trickling a
	// 500 MB bulk costs its bytes, not twice them). While held is not empty, out holds the
	// rest of that command from its start; heldWhole says the command is complete, and Read
	// hands on held[0][heldOff:], the other chunks, then out[:ready].
	held      [][]byte
	heldOff   int
	heldWhole bool
	large     int // an incomplete command this long is large (keepOut; less in tests)
	chunk     int // the size of a new chunk (chunkSize; less in tests)
	heldCap   int // bytes of memory in held (their capacity)

	budget    *Budget        // nil: none
	bmu       sync.Mutex     // counted, against Close from another goroutine
	counted   atomic.Int64   // bytes of this connection's large incomplete command in budget (written under bmu)
	closed    bool           // under bmu: nothing is counted any more
	perr      *ProtocolError // protocol error to report once out is drained (sticky)
	rerr      error          // error of the underlying Read, reported once out is drained
	replied   bool
	stamp     *stamper     // nil: plain reads, no receive times
	poll      *pollReader  // nil: reads wait on Go's netpoller (see Poller)
	stampWhen *atomic.Bool // nil: always; else reads keep receive times only while it is true
	arrival   int64        // receive time (unix ns) of the last read's bytes; 0: unknown

	// Unauthenticated, if set, says before each parse whether the client has not
	// authenticated to a Redis (or proxy) that requires it: Redis' stricter limits apply then,
	// and commands are handed on one at a time (Normalizer.SetUnauthenticated). Called on the
	// reader goroutine, which also runs the caller's command handling.
	Unauthenticated func() bool
	pend            []byte // read bytes not parsed yet (after an unauthenticated command)
	parsed          int    // commands ReadBatch parsed from their bytes, without marks (tests)

	// OnBatch, if set, runs as soon as a read with a receive time returns bytes, with that
	// time, before they are parsed (and again, harmlessly, once they are found to be whole
	// commands, which the caller will handle next). Set before the first Read; called on the
	// reader goroutine.
	OnBatch func(at int64)
	// OnPartial, if set, runs when a read registered with OnBatch turns out not to end at a
	// command boundary (part of a command, or a protocol error): the registration is withdrawn.
	OnPartial func()

	// BeforeErrorReply, if set, runs before the protocol error reply is written: a caller whose
	// replies to earlier commands are written by another goroutine waits for them here, so
	// the error comes last, as from Redis. Set and called on the reader goroutine.
	BeforeErrorReply func()

	// beforeClose, if set, runs when the connection is closed, before it closes: see SetBeforeClose.
	beforeClose atomic.Pointer[func()]

	// deferClose, if set, takes the socket to close later once its peer has closed: see
	// SetDeferClose. eof: a read returned EOF; deferred: Close handed the socket on.
	deferClose func(net.Conn) bool
	eof        atomic.Bool
	deferred   atomic.Bool

	io      atomic.Uint64 // reads and writes done (Activity)
	writing atomic.Bool   // a write is in progress
}

// SetBeforeClose sets f to run at Close, before the connection closes (e.g. to let replies
// still being relayed by another goroutine reach the client during a graceful shutdown).
// Safe to call while another goroutine may close the connection.
func (c *Conn) SetBeforeClose(f func()) { c.beforeClose.Store(&f) }

// SetDeferClose makes Close hand the socket to f instead of closing it, once a read has
// returned EOF (the client has gone): closing a TCP socket is about 20 µs of the kernel's time,
// and 10,000 clients leaving at once kept the proxy's thread busy for 200 ms while the clients
// still there waited behind them (bench/README.md). f closes it later, and reports false if it
// cannot take it (Close then closes at once). Call before the first Read.
func (c *Conn) SetDeferClose(f func(net.Conn) bool) { c.deferClose = f }

// Close runs the before-close hook, if any, then closes the connection (or hands it to the
// SetDeferClose func).
func (c *Conn) Close() error {
	if c.deferred.Load() {
		return nil // handed on already: it is closed, or will be
	}
	if f := c.beforeClose.Load(); f != nil {
		(*f)()
	}
	if c.budget != nil {
		c.bmu.Lock()
		c.closed = true
		c.budget.used.Add(-c.counted.Swap(0))
		c.bmu.Unlock()
	}
	if c.poll != nil {
		c.poll.unregister() // while the descriptor is still this connection's
	}
	if c.deferClose != nil && c.eof.Load() && c.deferred.CompareAndSwap(false, true) {
		if c.deferClose(c.Conn) {
			return nil
		}
	}
	return c.Conn.Close()
}

// SetReadDeadline is net.Conn's; it also bounds a read waiting for the Poller.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.poll != nil {
		c.poll.setReadDeadline(t)
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is net.Conn's; it also bounds a read waiting for the Poller.
func (c *Conn) SetDeadline(t time.Time) error {
	if c.poll != nil {
		c.poll.setReadDeadline(t)
	}
	return c.Conn.SetDeadline(t)
}

// Budget bounds the bytes that large incomplete commands hold across the connections that share
// it (Redis' maxmemory-clients, for the proxy's input side): the connection whose command takes
// the total past the limit is closed (ErrInputMemory). Commands under 64 KiB are not counted.
type Budget struct {
	limit, used atomic.Int64
}

// SetLimit sets the bound in bytes (0: none). It is enforced as large commands grow: the next
// connection whose held memory grows while the total is past the bound is closed, not
// necessarily the largest (Redis' client eviction takes the largest first).
func (b *Budget) SetLimit(n int64) { b.limit.Store(n) }

// Used is the bytes counted now.
func (b *Budget) Used() int64 { return b.used.Load() }

// SetBudget makes c count its large incomplete commands in b. Call before the first Read.
func (c *Conn) SetBudget(b *Budget) { c.budget = b }

// account brings the budget up to date with what c holds of an incomplete command; false if
// that takes the budget past its limit. Called on the reader goroutine after each parse.
func (c *Conn) account() bool {
	var n int64
	if len(c.held) > 0 || len(c.out)-c.ready >= c.large {
		n = int64(c.heldCap + cap(c.out) + cap(c.bigRaw)) // the memory, not just the bytes in it
	}
	if n == 0 && c.counted.Load() == 0 {
		return true // the common case, a small command: no lock
	}
	c.bmu.Lock()
	defer c.bmu.Unlock()
	if c.closed || n == c.counted.Load() {
		return true
	}
	d := n - c.counted.Load()
	c.counted.Store(n)
	used := c.budget.used.Add(d)
	lim := c.budget.limit.Load()
	return d < 0 || lim <= 0 || used <= lim
}

// connReadSize is one read from the client, Redis' PROTO_IOBUF_LEN, once a read has filled
// connReadMin.
const connReadSize = 16 << 10

// connReadMin is the read buffer a connection starts with and goes back to (sizeRaw): a
// goroutine parked in a read holds its buffer, and 10,000 idle clients with 16 KiB each were
// 160 MB of the proxy's heap; in a storm of new connections those buffers, allocated in about
// a second, made the garbage collector's assists stall the proxy's one thread for 20-30 ms.
// 4 KiB is what a batch holds anyway (maxBatch): a burst up to it is still read at once.
const connReadMin = maxBatch

// shrinkReads is how many reads in a row that connReadMin would have held take a
// connection's read buffer back to connReadMin.
const shrinkReads = 64

// sizeRaw sizes the read buffer for the next read after one of n bytes into it: a full read
// means more is coming (a pipeline, a large value), a run of small ones that the client has
// gone back to small batches or to idling. The bytes just read stay where they are (src, pend
// may alias them).
func (c *Conn) sizeRaw(n int) {
	switch {
	case n == len(c.raw) && n < connReadSize:
		c.raw, c.smallReads = make([]byte, connReadSize), 0
	case len(c.raw) == connReadMin || n > connReadMin:
		c.smallReads = 0
	default:
		if c.smallReads++; c.smallReads >= shrinkReads {
			c.raw, c.smallReads = make([]byte, connReadMin), 0
		}
	}
}

// keepOut is the largest normalized-output buffer a connection keeps between commands.
const keepOut = 64 << 10

// chunkSize is the size of a chunk of a large command held (Conn.held).
const chunkSize = 1 << 20

// bigReadSize is one read from the client while a command of keepOut bytes or more is still
// incomplete.
const bigReadSize = 256 << 10

// NewConn wraps c; lim bounds what the client may send.
func NewConn(c net.Conn, lim Limits) *Conn {
	n := NewNormalizer(lim)
	n.track = true // for ReadBatch; the first Read stops it
	return &Conn{Conn: c, n: n, large: keepOut, chunk: chunkSize}
}

// Stamp makes reads keep the kernel's receive time of their bytes (Arrival), where the
// platform gives it (Linux TCP). Call before the first Read.
func (c *Conn) Stamp() { c.stamp = newStamper(c.Conn, true) }

// StampInherited is Stamp for a connection accepted from a listener that StampListener set up:
// the option is already on (one setsockopt fewer per connection).
func (c *Conn) StampInherited() { c.stamp = newStamper(c.Conn, false) }

// StampWhen makes Stamp's receive times depend on on: while it is false, reads are plain reads
// (their Arrival is 0). Call before the first Read.
func (c *Conn) StampWhen(on *atomic.Bool) { c.stampWhen = on }

// Arrival is when the kernel received the bytes of the last read (unix ns), 0 if unknown.
// Called on the reader goroutine.
func (c *Conn) Arrival() int64 { return c.arrival }

// Ready is how many bytes of whole commands the next Reads hand over without reading from the
// client: redcon's reader (patched) sizes its buffer for an incomplete command by it. Called on
// the reader goroutine.
func (c *Conn) Ready() int {
	n := c.ready - c.off
	if c.heldWhole {
		n -= c.heldOff
		for _, h := range c.held {
			n += len(h)
		}
	}
	return n
}

// Read reads normalized client bytes into p.
func (c *Conn) Read(p []byte) (int, error) {
	if c.n.track {
		// The byte stream from now on (redcon detached the connection): no one reads the
		// marks. The commands ReadBatch handed out stay valid (a detached connection's
		// handler may still use them), so the bytes after them move to a buffer of their own
		// rather than over them.
		c.n.stop()
		c.out = append([]byte(nil), c.out[c.off:]...)
		c.ready, c.off = c.ready-c.off, 0
	}
	for {
		// Only whole commands are handed on: redcon's reader parses its buffer from the start
		// of an incomplete command on every read, so a large command read in pieces would cost
		// the square of its size. Held here, it reaches redcon whole, in reads that fill its
		// buffer (sized by Ready, third_party/redcon/PATCH.md), and is parsed about once.
		if c.heldWhole || c.off < c.ready {
			// As much as p takes: the chunks of a large command first, then out. (A read that
			// stopped at each chunk would have redcon parse the command once per chunk.)
			k := 0
			for c.heldWhole && k < len(p) {
				n := copy(p[k:], c.held[0][c.heldOff:])
				k += n
				if c.heldOff += n; c.heldOff == len(c.held[0]) {
					c.held[0] = nil
					c.held, c.heldOff = c.held[1:], 0
					if len(c.held) == 0 {
						c.held, c.heldWhole, c.heldCap = nil, false, 0
						if c.budget != nil {
							c.account() // handed on: no longer held
						}
					}
				}
			}
			if !c.heldWhole {
				n := copy(p[k:], c.out[c.off:c.ready])
				c.off += n
				k += n
			}
			return k, nil
		}
		if err := c.fill(len(p) > 0); err != nil {
			if err == errNoRoom {
				return 0, nil
			}
			return 0, err
		}
	}
}

// errNoRoom: fill was asked not to read from the client (a Read into an empty p).
var errNoRoom = errors.New("resp: no room")

// fill reads from the client once (or takes bytes held back earlier) and normalizes what it
// got, once every whole command before has been handed on. An error is the client's protocol
// error or the read's, reported once the whole commands before it are out.
func (c *Conn) fill(mayRead bool) error {
	if c.off > 0 { // the whole commands are out: keep the held tail at the front
		if cap(c.out) > keepOut && len(c.out)-c.off <= keepOut {
			// after a huge command, a small buffer again
			c.out = append(make([]byte, 0, keepOut), c.out[c.off:]...)
		} else {
			n := copy(c.out, c.out[c.off:])
			c.out = c.out[:n]
		}
		if c.n.track {
			c.n.shift(c.off)
		}
		c.ready, c.off = c.ready-c.off, 0
	}
	if c.perr != nil {
		if !c.replied {
			c.replied = true
			if c.BeforeErrorReply != nil {
				c.BeforeErrorReply()
			}
			if !c.perr.Silent {
				_, _ = c.Write(c.perr.Reply()) // best effort; the connection ends either way
			}
		}
		return c.perr
	}
	var src []byte
	if len(c.pend) > 0 { // bytes read earlier, held while the client was unauthenticated
		src, c.pend = c.pend, nil
	} else {
		if err := c.rerr; err != nil {
			c.rerr = nil // not sticky: a read deadline may be extended and Read called again
			return err
		}
		if !mayRead {
			return errNoRoom
		}
		if c.raw == nil {
			c.raw = make([]byte, connReadMin)
		}
		buf := c.raw
		if c.heldCap >= c.chunk {
			// A command of a MiB or more is coming in: fewer, larger reads (a 1M-key DEL
			// is 16.8 MB). The buffer is let go at the first read after it.
			if c.bigRaw == nil {
				c.bigRaw = make([]byte, bigReadSize)
			}
			buf = c.bigRaw
		} else {
			c.bigRaw = nil
		}
		var nr int
		var err error
		stamped := c.stamp != nil && (c.stampWhen == nil || c.stampWhen.Load())
		switch {
		case c.poll != nil:
			nr, c.arrival, err = c.poll.read(buf, stamped)
		case stamped:
			nr, c.arrival, err = c.stamp.read(buf)
		default:
			nr, err = c.Conn.Read(buf)
			c.arrival = 0
		}
		src, c.rerr = buf[:nr], err
		if len(buf) == len(c.raw) {
			c.sizeRaw(nr)
		}
		if err == io.EOF {
			c.eof.Store(true)
		}
		if nr > 0 {
			c.io.Add(1)
			if c.OnBatch != nil && c.arrival != 0 {
				// Registered at once, before the parse: a goroutine descheduled between
				// its read and its parse must already hold later batches back. Withdrawn
				// below if the bytes do not end at a command boundary.
				c.OnBatch(c.arrival)
			}
		}
	}
	c.n.SetUnauthenticated(c.Unauthenticated != nil && c.Unauthenticated())
	if len(c.out) >= c.large && cap(c.out)-len(c.out) < len(src) {
		// An incomplete command (out holds nothing else here) outgrows its buffer: the
		// buffer becomes a held chunk and a new one takes the rest, rather than a copy of
		// everything so far into one twice as large (whose zeroed tail is resident too).
		// Chunks double up to c.chunk: a command of 100 KiB costs about that, one of
		// 100 MiB no copy of what came before.
		c.held = append(c.held, c.out)
		c.heldCap += cap(c.out)
		c.out = make([]byte, 0, min(max(2*len(c.out), c.large), c.chunk))
		if c.n.track {
			c.n.moved()
		}
	}
	out, ferr := c.n.Feed(c.out, src)
	c.out = out
	if u := c.n.Used(); ferr == nil && u < len(src) {
		c.pend = src[u:] // aliases a read buffer, which is read into again only once pend is empty
	}
	if b := c.n.Boundary(); b >= 0 {
		c.ready = b
		c.heldWhole = len(c.held) > 0 // the large command ended in out
	}
	if ferr == nil && c.budget != nil && !c.account() {
		ferr = ErrInputMemory
	}
	if ferr != nil {
		// The whole commands before the error still go; an incomplete one never does.
		c.out = c.out[:c.ready]
		if !c.heldWhole {
			c.held, c.heldCap = nil, 0
		}
		if c.budget != nil {
			c.account() // what the dropped command held is given back now, not at Close
		}
	}
	if len(c.out) == 0 && cap(c.out) > keepOut {
		c.out = nil // a huge command once should not pin its buffer
	}
	whole := ferr == nil && len(out) > 0 && c.n.state == stStart
	if ferr != nil {
		c.perr = ferr.(*ProtocolError)
	}
	switch {
	case c.OnBatch == nil || c.arrival == 0:
	case whole:
		c.OnBatch(c.arrival) // bytes left from an earlier read (pend): registered now
	case c.OnPartial != nil:
		c.OnPartial()
	}
	return nil
}

// Write writes to the client; it is safe to call from several goroutines.
func (c *Conn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil // redcon flushes an empty buffer after every batch of a dedicated client
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.writing.Store(true)
	n, err := c.Conn.Write(b)
	c.writing.Store(false)
	c.io.Add(1)
	return n, err
}

// Activity is a count that grows with every read of client bytes and every write to the
// client, and whether a write is in progress (a slow reader taking a large reply): the
// connection's activity for an idle timeout, which counts the bytes of a command still coming
// in and of a reply still going out, as Redis does.
func (c *Conn) Activity() (uint64, bool) { return c.io.Load(), c.writing.Load() }
