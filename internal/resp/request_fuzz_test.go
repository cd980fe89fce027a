package resp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/redcon"
)

// canonicalPrefix checks that out is canonical RESP multibulk as the normalizer emits it:
// "*<n>\r\n" (n >= 1) then n times "$<len>\r\n<data>\r\n", decimal lengths without sign or
// leading zeros. Headers and CRLFs are emitted whole, so out may stop only between elements or
// inside bulk data. It returns the length of the complete commands at the front of out.
func canonicalPrefix(out []byte) (int, error) {
	header := func(i int, kind byte) (int64, int, error) {
		if out[i] != kind {
			return 0, 0, fmt.Errorf("at %d: got %q, want %q", i, out[i], kind)
		}
		end := bytes.Index(out[i:], []byte("\r\n"))
		if end < 0 {
			return 0, 0, fmt.Errorf("at %d: truncated header %q", i, out[i:])
		}
		digits := string(out[i+1 : i+end])
		v, err := strconv.ParseInt(digits, 10, 64)
		if err != nil || v < 0 || strconv.FormatInt(v, 10) != digits {
			return 0, 0, fmt.Errorf("at %d: non-canonical length %q", i, digits)
		}
		return v, i + end + 2, nil
	}
	complete, i := 0, 0
	for i < len(out) {
		n, next, err := header(i, '*')
		if err != nil {
			return complete, err
		}
		if n < 1 {
			return complete, fmt.Errorf("at %d: empty multibulk emitted", i)
		}
		i = next
		for range n {
			if i == len(out) {
				return complete, nil
			}
			l, next, err := header(i, '$')
			if err != nil {
				return complete, err
			}
			i = next
			if int64(len(out)-i) <= l {
				return complete, nil // data still streaming, or its CRLF not yet due
			}
			i += int(l)
			if len(out)-i < 2 || out[i] != '\r' || out[i+1] != '\n' {
				return complete, fmt.Errorf("at %d: bulk not followed by a whole CRLF", i)
			}
			i += 2
		}
		complete = i
	}
	return complete, nil
}

// redisModel is an independent, whole-buffer transliteration of Redis 7.0's
// processInlineBuffer / processMultibulkBuffer / sdssplitargs for a client whose bytes arrive
// one at a time (so every line limit applies as soon as it is passed). It returns the complete
// commands in canonical form and the error Msg ("" when the input just ends).
func redisModel(q []byte, lim Limits) ([]byte, string) {
	var out []byte
	// cstrchr is strchr on the NUL-terminated query buffer: -1 if a NUL or the end comes first.
	cstrchr := func(b []byte, c byte) int {
		for i, x := range b {
			if x == c {
				return i
			}
			if x == 0 {
				return -1
			}
		}
		return -1
	}
	emit := func(args [][]byte) {
		if len(args) == 0 {
			return
		}
		out = fmt.Appendf(out, "*%d\r\n", len(args))
		for _, a := range args {
			out = fmt.Appendf(out, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	pos := 0
	for pos < len(q) {
		if q[pos] != '*' {
			nl := cstrchr(q[pos:], '\n')
			if nl < 0 {
				if len(q)-pos > lim.MaxInlineLen {
					return out, msgTooBigInline
				}
				return out, ""
			}
			if nl > lim.MaxInlineLen {
				return out, msgTooBigInline
			}
			line := q[pos : pos+nl]
			if nl > 0 && line[nl-1] == '\r' {
				line = line[:nl-1]
			}
			args, ok := modelSplitArgs(line)
			if !ok {
				return out, msgUnbalanced
			}
			pos += nl + 1
			emit(args)
			continue
		}
		nl := cstrchr(q[pos:], '\r')
		if nl < 0 {
			if len(q)-pos > lim.MaxInlineLen {
				return out, msgTooBigMbulk
			}
			return out, ""
		}
		if nl > lim.MaxInlineLen {
			return out, msgTooBigMbulk
		}
		if nl > len(q)-pos-2 {
			return out, ""
		}
		ll, ok := modelString2ll(q[pos+1 : pos+nl])
		if !ok || ll > lim.MaxMultibulkLen {
			return out, msgInvalidMbulk
		}
		pos += nl + 2
		if ll <= 0 {
			continue
		}
		var args [][]byte
		for int64(len(args)) < ll {
			nl := cstrchr(q[pos:], '\r')
			if nl < 0 {
				if len(q)-pos > lim.MaxInlineLen {
					return out, msgTooBigBulk
				}
				return out, ""
			}
			if nl > lim.MaxInlineLen {
				return out, msgTooBigBulk
			}
			if nl > len(q)-pos-2 {
				return out, ""
			}
			if q[pos] != '$' {
				c := q[pos]
				if c == '\r' || c == '\n' {
					c = ' '
				}
				return out, "Protocol error: expected '$', got '" + string([]byte{c}) + "'"
			}
			bl, ok := modelString2ll(q[pos+1 : pos+nl])
			if !ok || bl < 0 || bl > lim.MaxBulkLen {
				return out, msgInvalidBulk
			}
			pos += nl + 2
			if int64(len(q)-pos) < bl+2 {
				return out, ""
			}
			args = append(args, q[pos:pos+int(bl)])
			pos += int(bl) + 2
		}
		emit(args)
	}
	return out, ""
}

var canonicalInt = regexp.MustCompile(`^(0|-?[1-9][0-9]*)$`)

func modelString2ll(b []byte) (int64, bool) {
	if len(b) >= 21 || !canonicalInt.Match(b) {
		return 0, false
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	return v, err == nil
}

// modelSplitArgs is sds.c sdssplitargs, pointer for pointer, over a NUL-terminated copy.
func modelSplitArgs(line []byte) ([][]byte, bool) {
	s := append(append([]byte(nil), line...), 0)
	isspace := func(c byte) bool { return bytes.IndexByte([]byte(" \t\n\v\f\r"), c) >= 0 }
	ishex := func(c byte) bool { return c != 0 && bytes.IndexByte([]byte("0123456789abcdefABCDEF"), c) >= 0 }
	hexval := func(c byte) byte {
		v, _ := strconv.ParseUint(string([]byte{c}), 16, 8)
		return byte(v)
	}
	var argv [][]byte
	p := 0
	for {
		for s[p] != 0 && isspace(s[p]) {
			p++
		}
		if s[p] == 0 {
			return argv, true
		}
		inq, insq, done := false, false, false
		cur := []byte{}
		for !done {
			if inq {
				if s[p] == '\\' && s[p+1] == 'x' && ishex(s[p+2]) && ishex(s[p+3]) {
					cur = append(cur, hexval(s[p+2])*16+hexval(s[p+3]))
					p += 3
				} else if s[p] == '\\' && s[p+1] != 0 {
					p++
					c := map[byte]byte{'n': '\n', 'r': '\r', 't': '\t', 'b': '\b', 'a': '\a'}[s[p]]
					if c == 0 {
						c = s[p]
					}
					cur = append(cur, c)
				} else if s[p] == '"' {
					if s[p+1] != 0 && !isspace(s[p+1]) {
						return nil, false
					}
					done = true
				} else if s[p] == 0 {
					return nil, false
				} else {
					cur = append(cur, s[p])
				}
			} else if insq {
				if s[p] == '\\' && s[p+1] == '\'' {
					p++
					cur = append(cur, '\'')
				} else if s[p] == '\'' {
					if s[p+1] != 0 && !isspace(s[p+1]) {
						return nil, false
					}
					done = true
				} else if s[p] == 0 {
					return nil, false
				} else {
					cur = append(cur, s[p])
				}
			} else {
				switch s[p] {
				case ' ', '\n', '\r', '\t', 0:
					done = true
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					cur = append(cur, s[p])
				}
			}
			if s[p] != 0 {
				p++
			}
		}
		argv = append(argv, cur)
	}
}

// fuzzLimits: the small set makes every limit reachable with short inputs.
var fuzzLimits = []Limits{
	{MaxBulkLen: 16, MaxMultibulkLen: 8, MaxInlineLen: 24},
	DefaultLimits(),
}

// FuzzNormalizer checks that the normalizer never panics, always emits canonical multibulk,
// gives the same result however the input is split, and agrees with redisModel.
func FuzzNormalizer(f *testing.F) {
	for _, tc := range normCases {
		if len(tc.in) < 4096 {
			f.Add([]byte(tc.in), uint16(len(tc.in)/2))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		k := int(split) % (len(in) + 1)
		for _, lim := range fuzzLimits {
			n := NewNormalizer(lim)
			out, err := n.Feed(nil, in)
			msg := ""
			if err != nil {
				var pe *ProtocolError
				if !errors.As(err, &pe) {
					t.Fatalf("error %v is not a *ProtocolError", err)
				}
				msg = pe.Msg
			}
			complete, cerr := canonicalPrefix(out)
			if cerr != nil {
				t.Fatalf("limits %+v: output not canonical: %v\n%q", lim, cerr, out)
			}
			if err == nil && n.state == stStart && complete != len(out) {
				t.Fatalf("limits %+v: between requests but output ends mid-command: %q", lim, out)
			}

			out2, msg2 := normFeed(t, lim, in[:k], in[k:])
			if string(out2) != string(out) || msg2 != msg {
				t.Fatalf("limits %+v: split at %d gives %q, %q; whole gives %q, %q", lim, k, out2, msg2, out, msg)
			}

			bytewise := make([][]byte, len(in))
			for i := range in {
				bytewise[i] = in[i : i+1]
			}
			if out3, msg3 := normFeed(t, lim, bytewise...); string(out3) != string(out) || msg3 != msg {
				t.Fatalf("limits %+v: byte by byte gives %q, %q; whole gives %q, %q", lim, out3, msg3, out, msg)
			}

			want, wantMsg := redisModel(in, lim)
			if string(out[:complete]) != string(want) || msg != wantMsg {
				t.Fatalf("limits %+v:\n got   %q, %q\n model %q, %q", lim, out[:complete], msg, want, wantMsg)
			}
		}
	})
}

// FuzzConnChunks drives Conn as the proxy does, under redcon's (patched) reader, with the
// client's bytes written in fuzzed pieces and Conn's large-command thresholds cut to a few
// bytes, so that commands are held in chunks and handed on through Ready: the commands redcon
// returns must be exactly the whole ones the normalizer makes of the input, byte for byte.
// It runs twice: with the commands split by Conn.ReadBatch (the proxy's path) and through the
// byte stream (Read) that redcon parses itself.
func FuzzConnChunks(f *testing.F) { fuzzChunks(f, nil) }

// fuzzChunks is FuzzConnChunks, and with p FuzzPollChunks: the input in pieces through a Conn,
// through ReadBatch and through the byte stream.
func fuzzChunks(f *testing.F, p *polledPair) {
	for _, tc := range normCases {
		if len(tc.in) < 4096 {
			f.Add([]byte(tc.in), []byte{3, 50})
		}
	}
	f.Add([]byte(mbulk("SET", "k", strings.Repeat("v", 300))+mbulk("GET", "k")), []byte{1, 9, 200})
	f.Add(append(setPipeline(16), "PING\r\n"+mbulk("GET", "k")...), []byte{255, 7})
	f.Add([]byte(mbulk("SET", "k", strings.Repeat("v", 40000))), []byte{}) // more than a read buffer at once
	f.Fuzz(func(t *testing.T, in, pieces []byte) {
		out, _ := NewNormalizer(DefaultLimits()).Feed(nil, in)
		complete, err := canonicalPrefix(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, bytewise := range []bool{false, true} {
			if got := connChunks(t, in, pieces, complete, bytewise, p); !bytes.Equal(got, out[:complete]) {
				t.Fatalf("byte stream %v: redcon got %q\nwant the whole commands %q", bytewise, got, out[:complete])
			}
		}
	})
}

// connChunks writes in to a Conn in the pieces given and returns the canonical commands redcon
// reads from it, up to want bytes of them, checking that each command's Args match its Raw.
// With a Poller the Conn is one end of a loopback TCP connection whose reads p wakes; without,
// of a net.Pipe.
func connChunks(t *testing.T, in, pieces []byte, want int, bytewise bool, p *polledPair) []byte {
	var client, server net.Conn
	if p != nil {
		client, server = p.pair(t)
	} else {
		client, server = net.Pipe()
	}
	defer client.Close()
	c := NewConn(server, DefaultLimits())
	if p != nil && !c.Poll(p.Poller) {
		t.Fatal("Poll refused a TCP connection")
	}
	budget := new(Budget) // no limit: only the accounting, which Close must zero
	c.SetBudget(budget)
	defer func() {
		c.Close()
		if n := budget.Used(); n != 0 {
			t.Fatalf("%d bytes still counted after Close", n)
		}
	}()
	c.large, c.chunk = 16, 48
	go func() {
		for i, k := 0, 0; i < len(in); k++ {
			n := len(in) - i
			if len(pieces) > 0 {
				n = min(n, 1+int(pieces[k%len(pieces)]))
			}
			if _, err := client.Write(in[i : i+n]); err != nil {
				return
			}
			i += n
		}
		_, _ = io.Copy(io.Discard, client) // a protocol error's reply, until the test closes it
	}()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var rd *redcon.Reader
	if bytewise {
		rd = redcon.NewReader(readOnlyConn{c})
	} else {
		rd = redcon.NewReader(c)
	}
	var got []byte
	for len(got) < want {
		batch, err := rd.ReadCommands()
		if err != nil {
			if errors.Is(err, errFraming) || errors.Is(err, errBatchAfterRead) {
				t.Fatal(err)
			}
			return got
		}
		for _, cmd := range batch {
			var enc []byte
			enc = redcon.AppendArray(enc, len(cmd.Args))
			for _, a := range cmd.Args {
				enc = redcon.AppendBulk(enc, a)
			}
			if !bytes.Equal(enc, cmd.Raw) || cap(cmd.Raw) != len(cmd.Raw) {
				t.Fatalf("Args do not match Raw %q", cmd.Raw)
			}
			for _, a := range cmd.Args {
				if cap(a) != len(a) {
					t.Fatalf("argument %q of %q has room behind it", a, cmd.Raw)
				}
			}
			got = append(got, cmd.Raw...)
		}
	}
	return got
}
