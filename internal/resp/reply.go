package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
)

// ErrBadReply means the upstream sent bytes that are not a RESP2/RESP3 reply; the connection
// cannot be trusted after it.
var ErrBadReply = errors.New("resp: malformed reply")

// maxReplyLine bounds a reply header line; Redis never sends more than a few dozen bytes there
// except for simple strings and errors, which stay far below this.
const maxReplyLine = 1 << 20

// maxReplyBulk is far above any bulk Redis can hold (proto-max-bulk-len tops out at 4 GiB in
// practice); a larger length means the stream is corrupt.
const maxReplyBulk = 1 << 32

// AppendReply reads exactly one complete reply (RESP2 or RESP3, nested aggregates and
// attributes included) from r and appends its raw bytes to dst.
func AppendReply(dst []byte, r *bufio.Reader) ([]byte, error) {
	// Most replies are small and already whole in r's buffer: one scan of it and one copy,
	// rather than a ReadSlice per line (6% of the proxy's CPU at GET 50/16). Anything else
	// (incomplete, malformed: its error is the stream reader's) is read line by line.
	if b, _ := r.Peek(r.Buffered()); len(b) > 0 {
		if n, err := replyLen(b); err == nil && n > 0 {
			dst = append(dst, b[:n]...)
			_, _ = r.Discard(n)
			return dst, nil
		}
	}
	need := 1 // frames still to read at this nesting level and below
	for need > 0 {
		start := len(dst)
		var err error
		dst, err = appendLine(dst, r)
		if err != nil {
			return dst, err
		}
		d, bulk, err := frame(dst[start : len(dst)-2])
		if err != nil {
			return dst, err
		}
		need += d
		if bulk >= 0 {
			if dst, err = appendN(dst, r, int(bulk)+2); err != nil {
				return dst, err
			}
		}
	}
	return dst, nil
}

// frame reads one reply header line (CRLF excluded): how the count of frames still to read
// changes with it, and the length of the bulk data that follows it (-1: none). The grammar of
// AppendReply and ReplyLen.
func frame(line []byte) (need int, bulk int64, err error) {
	if len(line) == 0 {
		return 0, -1, fmt.Errorf("%w: empty line", ErrBadReply)
	}
	switch line[0] {
	case '+', '-', ':', '_', '#', ',', '(':
		return -1, -1, nil
	case '$', '!', '=':
		n, ok := parseLen(line[1:])
		switch {
		case !ok:
			return 0, -1, fmt.Errorf("%w: bad bulk length %q", ErrBadReply, line)
		case n > maxReplyBulk:
			return 0, -1, fmt.Errorf("%w: bulk length %d", ErrBadReply, n)
		case n < 0:
			return -1, -1, nil
		}
		return -1, n, nil
	case '*', '~', '>', '%', '|':
		n, ok := parseLen(line[1:])
		switch {
		case !ok || n > maxReplyBulk: // far more elements than memory holds: corrupt
			return 0, -1, fmt.Errorf("%w: bad aggregate length %q", ErrBadReply, line)
		case n < 0: // RESP2 null array
			return -1, -1, nil
		case line[0] == '%':
			return 2*int(n) - 1, -1, nil
		case line[0] == '|': // attribute: its pairs precede the reply it annotates
			return 2 * int(n), -1, nil
		}
		return int(n) - 1, -1, nil
	}
	return 0, -1, fmt.Errorf("%w: unexpected type byte %q", ErrBadReply, line[0])
}

// appendLine appends one CRLF-terminated line (terminator included) from r to dst.
func appendLine(dst []byte, r *bufio.Reader) ([]byte, error) {
	start := len(dst)
	for {
		frag, err := r.ReadSlice('\n')
		dst = append(dst, frag...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			return dst, err
		}
		if len(dst)-start > maxReplyLine {
			return dst, fmt.Errorf("%w: line longer than %d bytes", ErrBadReply, maxReplyLine)
		}
	}
	if n := len(dst) - start; n < 2 || dst[len(dst)-2] != '\r' {
		return dst, fmt.Errorf("%w: line not terminated by CRLF", ErrBadReply)
	}
	return dst, nil
}

// parseLen parses a RESP length: optional '-' and decimal digits, at most 18 of them (no
// length near int64's limit is real, and 19 digits could overflow).
func parseLen(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 || len(b) == 19 && b[0] != '-' {
		return 0, false
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		return -n, true
	}
	return n, true
}

// appendN appends exactly n bytes from r to dst. Memory grows with the bytes that actually
// arrive, never with the declared length alone, so a lying length cannot exhaust memory.
func appendN(dst []byte, r *bufio.Reader, n int) ([]byte, error) {
	if n > 64<<10 {
		// A large bulk: room for it at once (up to 16 MiB; beyond, append's growth takes
		// over), not a copy per doubling on the way (a 10 MiB value read into a fresh buffer
		// took a dozen). Bounded, so a length header alone never reserves more than that.
		dst = slices.Grow(dst, min(n, 16<<20))
	}
	for n > 0 {
		if cap(dst) == len(dst) {
			dst = append(dst, 0)[:len(dst)] // let append pick the growth
		}
		room := min(cap(dst)-len(dst), n)
		at := len(dst)
		got, err := io.ReadFull(r, dst[at:at+room])
		dst = dst[:at+got]
		n -= got
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return dst, err
		}
	}
	return dst, nil
}
