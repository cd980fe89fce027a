package resp

import "fmt"

// ReplyLen is the length of the one complete reply (RESP2 or RESP3) at the start of b, the
// same grammar AppendReply reads from a stream; an error if b holds no complete, well-formed
// reply.
func ReplyLen(b []byte) (int, error) {
	n, err := replyLen(b)
	if err == nil && n == 0 {
		return 0, fmt.Errorf("%w: incomplete reply", ErrBadReply)
	}
	return n, err
}

// replyLen is ReplyLen with an incomplete reply reported as 0 and no error, without
// allocating: AppendReply's fast path tries it on every reply.
func replyLen(b []byte) (int, error) {
	i, need := 0, 1
	for need > 0 {
		j := lineEnd(b, i)
		if j < 0 {
			return 0, nil
		}
		d, bulk, err := frame(b[i:j])
		if err != nil {
			return 0, err
		}
		i, need = j+2, need+d
		if bulk >= 0 {
			if bulk > int64(len(b)-i-2) { // the two bytes after the data are skipped, as AppendReply does
				return 0, nil
			}
			i += int(bulk) + 2
		}
	}
	return i, nil
}

// lineEnd is the index of the CRLF ending the line that starts at i, -1 if none.
func lineEnd(b []byte, i int) int {
	for j := i; j+1 < len(b); j++ {
		if b[j] == '\r' && b[j+1] == '\n' {
			return j
		}
		if b[j] == '\n' {
			return -1
		}
	}
	return -1
}

// SplitArray splits a complete array reply ('*' or RESP3 '~'/'>') into its elements' raw
// bytes, appended to dst. ok is false for anything else (an error, a null array...).
func SplitArray(dst [][]byte, b []byte) ([][]byte, bool) {
	if len(b) == 0 || (b[0] != '*' && b[0] != '~' && b[0] != '>') {
		return dst, false
	}
	j := lineEnd(b, 0)
	if j < 0 {
		return dst, false
	}
	n, ok := parseLen(b[1:j])
	if !ok || n < 0 {
		return dst, false
	}
	i := j + 2
	for range n {
		l, err := ReplyLen(b[i:])
		if err != nil {
			return dst, false
		}
		dst = append(dst, b[i:i+l])
		i += l
	}
	return dst, i == len(b)
}
