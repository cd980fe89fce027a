package resp

import (
	"bufio"
	"bytes"
	"strconv"
	"testing"
)

// FuzzAppendReply checks that the reply relay never panics on arbitrary upstream bytes, that
// every frame it returns is a prefix-exact slice of the input (raw relay, nothing re-encoded),
// and that its frames end where refFrame, an independent recursive reading, says they do.
func FuzzAppendReply(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "$3\r\nfoo\r\n", "*2\r\n:1\r\n$-1\r\n", "%1\r\n+a\r\n~1\r\n#f\r\n",
		"|1\r\n+a\r\n+b\r\n:1\r\n", ">2\r\n+x\r\n=5\r\ntxt:a\r\n", "*-1\r\n", "$99999999999\r\n",
		"*1\r\n*1\r\n$2\r\na\nb\r\n+x\r\n", "+a\nb\r\n", "$+1\r\nx\r\n", "*3\r\n:1\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// A small buffer reads most frames line by line; a large one holds them whole (the
		// fast path).
		for _, size := range []int{16, 4096} {
			br := bufio.NewReaderSize(bytes.NewReader(in), size)
			var out []byte
			for range 64 {
				before := len(out)
				var err error
				out, err = AppendReply(out, br)
				want, ok := refFrame(in[before:], 0)
				if err != nil {
					if ok && len(in) < maxReplyLine {
						t.Fatalf("buffer %d: AppendReply failed (%v) on a complete frame of %d bytes at offset %d of %q", size, err, want, before, in)
					}
					break
				}
				if got := len(out) - before; !ok || got != want {
					t.Fatalf("buffer %d: frame at offset %d of %q: AppendReply read %d bytes, the reference %d (complete: %v)", size, before, in, got, want, ok)
				}
			}
			if !bytes.HasPrefix(in, out) {
				t.Fatalf("buffer %d: relayed bytes are not the input's prefix: %q vs %q", size, out, in)
			}
		}
	})
}

// refFrame is the length of the one complete RESP2/RESP3 frame at the start of b, read
// recursively (ok false: b does not start with one). Lines end at the first LF, which a CR
// must precede; lengths are an optional '-' and up to 19 digits; a bulk payload is its
// length plus 2 bytes.
func refFrame(b []byte, depth int) (int, bool) {
	if depth > 10000 {
		return 0, false
	}
	lf := bytes.IndexByte(b, '\n')
	if lf < 2 || b[lf-1] != '\r' {
		return 0, false
	}
	line, end := b[:lf-1], lf+1
	num := func() (int64, bool) {
		d := line[1:]
		if len(d) > 0 && d[0] == '-' {
			d = d[1:]
		}
		if len(d) == 0 || len(line)-1 > 19 {
			return 0, false
		}
		for _, c := range d {
			if c < '0' || c > '9' {
				return 0, false
			}
		}
		n, err := strconv.ParseInt(string(line[1:]), 10, 64)
		return n, err == nil
	}
	switch line[0] {
	case '+', '-', ':', '_', '#', ',', '(':
		return end, true
	case '$', '!', '=':
		n, ok := num()
		switch {
		case !ok || n > 1<<32:
			return 0, false
		case n < 0:
			return end, true
		case int64(len(b)-end) < n+2:
			return 0, false
		}
		return end + int(n) + 2, true
	case '*', '~', '>', '%', '|':
		n, ok := num()
		if !ok {
			return 0, false
		}
		if n < 0 {
			return end, true
		}
		elems := n
		switch line[0] {
		case '%':
			elems = 2 * n
		case '|':
			elems = 2*n + 1 // the attribute's pairs, then the reply it annotates
		}
		for range elems {
			k, ok := refFrame(b[end:], depth+1)
			if !ok {
				return 0, false
			}
			end += k
		}
		return end, true
	}
	return 0, false
}

// FuzzReplyLen: the slice scanner agrees with the stream reader on every input, and
// SplitArray's elements put together are the array's body.
func FuzzReplyLen(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "$3\r\nfoo\r\n", "*2\r\n$1\r\na\r\n:1\r\n", "*-1\r\n", "%1\r\n+a\r\n+b\r\n",
		"|1\r\n+k\r\n+v\r\n:3\r\n", "$-1\r\n", "*1\r\n*1\r\n$0\r\n\r\n", "$5\r\nab\r\n", "*3\r\n:1\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, rerr := AppendReply(nil, bufio.NewReader(bytes.NewReader(b)))
		n, err := ReplyLen(b)
		if (err == nil) != (rerr == nil) {
			// the stream reader may fail for a reason the slice scanner reports the same way
			t.Fatalf("ReplyLen(%q) = %d, %v; AppendReply: %v", b, n, err, rerr)
		}
		if err == nil && string(b[:n]) != string(want) {
			t.Fatalf("ReplyLen(%q) = %d, AppendReply read %q", b, n, want)
		}
		if err == nil {
			if elems, ok := SplitArray(nil, b[:n]); ok {
				hdr := bytes.IndexByte(b, '\n') + 1
				if got := bytes.Join(elems, nil); string(got) != string(b[hdr:n]) {
					t.Fatalf("SplitArray(%q) = %q", b[:n], elems)
				}
			}
		}
	})
}
