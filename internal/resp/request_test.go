package resp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/tidwall/redcon"
)

// mbulk is the canonical multibulk encoding of one command.
func mbulk(args ...string) string {
	var b strings.Builder
	b.WriteString("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		b.WriteString("$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n")
	}
	return b.String()
}

// smallLimits makes the limits reachable with short inputs.
var smallLimits = Limits{MaxBulkLen: 16, MaxMultibulkLen: 8, MaxInlineLen: 8}

// normCase is one normalizer input with the exact bytes it must emit and the exact Redis error
// text it must end with ("" for none). lim nil means DefaultLimits(); only those cases are
// also sent to redis-server by TestNormalizerMatchesRedis.
type normCase struct {
	name string
	in   string
	want string
	err  string
	lim  *Limits
}

const (
	msgTooBigInline = "Protocol error: too big inline request"
	msgUnbalanced   = "Protocol error: unbalanced quotes in request"
	msgTooBigMbulk  = "Protocol error: too big mbulk count string"
	msgInvalidMbulk = "Protocol error: invalid multibulk length"
	msgTooBigBulk   = "Protocol error: too big bulk count string"
	msgInvalidBulk  = "Protocol error: invalid bulk length"
)

// pad64k is more than PROTO_INLINE_MAX_SIZE of filler, for the NUL cases at default limits.
var pad64k = strings.Repeat("x", 64<<10)

var normCases = []normCase{
	// Multibulk, passed through canonically.
	{name: "mbulk/set", in: "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", want: mbulk("SET", "k", "v")},
	{name: "mbulk/pipeline", in: "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n", want: mbulk("PING") + mbulk("ECHO", "hi")},
	{name: "mbulk/binary data", in: "*2\r\n$4\r\nECHO\r\n$6\r\na\r\n\x00b\n\r\n", want: mbulk("ECHO", "a\r\n\x00b\n")},
	{name: "mbulk/empty bulk", in: "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", want: mbulk("ECHO", "")},
	{name: "mbulk/partial data streams", in: "*2\r\n$4\r\nECHO\r\n$5\r\nhel", want: "*2\r\n$4\r\nECHO\r\n$5\r\nhel"},
	{name: "mbulk/crlf after data waits for both bytes", in: "*1\r\n$4\r\nPING\r", want: "*1\r\n$4\r\nPING"},
	{name: "mbulk/count line waits for byte after cr", in: "*1\r", want: ""},
	{name: "mbulk/invalid count waits for byte after cr", in: "*x\r", want: ""},
	{name: "mbulk/bulk line waits for byte after cr", in: "*1\r\n$4\r", want: "*1\r\n"},
	{name: "mbulk/count cr then any byte", in: "*1\rX$4\r\nPING\r\n", want: mbulk("PING")},
	{name: "mbulk/count cr cr", in: "*1\r\r$4\r\nPING\r\n", want: mbulk("PING")},
	{name: "mbulk/bulk cr then any byte", in: "*1\r\n$4\r\x00PING\r\n", want: mbulk("PING")},
	{name: "mbulk/data trailer not checked", in: "*1\r\n$4\r\nPINGxy*1\r\n$4\r\nPING\n\n", want: mbulk("PING") + mbulk("PING")},
	{name: "mbulk/big bulk trailer not checked", in: "*2\r\n$4\r\nECHO\r\n$40000\r\n" + strings.Repeat("a", 40000) + "xy",
		want: mbulk("ECHO", strings.Repeat("a", 40000))},
	{name: "mbulk/zero count ignored", in: "*0\r\n*1\r\n$4\r\nPING\r\n", want: mbulk("PING")},
	{name: "mbulk/minus one ignored", in: "*-1\r\n*1\r\n$4\r\nPING\r\n", want: mbulk("PING")},
	{name: "mbulk/negative ignored", in: "*-5\r\n", want: ""},
	{name: "mbulk/int64 min ignored", in: "*-9223372036854775808\r\nPING\r\n", want: mbulk("PING")},
	{name: "mbulk/int max count", in: "*2147483647\r\n$4\r\nPING\r\n", want: "*2147483647\r\n" + "$4\r\nPING\r\n"},
	{name: "mbulk/max bulk len", in: "*1\r\n$536870912\r\nab", want: "*1\r\n$536870912\r\nab"},
	{name: "mbulk/count over int max", in: "*2147483648\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count plus", in: "*+1\r\n$4\r\nPING\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count leading zero", in: "*01\r\n$4\r\nPING\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count minus zero", in: "*-0\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count minus only", in: "*-\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count empty", in: "*\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count space before", in: "* 1\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count space after", in: "*1 \r\n", err: msgInvalidMbulk},
	{name: "mbulk/count letter", in: "*a\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count lf only", in: "*1\n$4\r\nPING\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count int64 overflow", in: "*9223372036854775808\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count uint64 overflow", in: "*18446744073709551616\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count 21 bytes", in: "*100000000000000000000\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count int64 min minus one", in: "*-9223372036854775809\r\n", err: msgInvalidMbulk},
	{name: "mbulk/count over limit", in: "*9\r\n", err: msgInvalidMbulk, lim: &smallLimits},
	{name: "mbulk/count at limit", in: "*8\r\n", want: "*8\r\n", lim: &smallLimits},
	{name: "mbulk/bulk minus one", in: "*1\r\n$-1\r\n", want: "*1\r\n", err: msgInvalidBulk},
	{name: "mbulk/bulk plus", in: "*1\r\n$+4\r\nPING\r\n", want: "*1\r\n", err: msgInvalidBulk},
	{name: "mbulk/bulk leading zero", in: "*1\r\n$04\r\nPING\r\n", want: "*1\r\n", err: msgInvalidBulk},
	{name: "mbulk/bulk minus zero", in: "*1\r\n$-0\r\n", want: "*1\r\n", err: msgInvalidBulk},
	{name: "mbulk/bulk empty", in: "*1\r\n$\r\n", want: "*1\r\n", err: msgInvalidBulk},
	{name: "mbulk/bulk space", in: "*1\r\n$ 4\r\nPING\r\n", want: "*1\r\n", err: msgInvalidBulk},
	{name: "mbulk/bulk lf only", in: "*1\r\n$4\nPING\r\n", want: "*1\r\n", err: msgInvalidBulk},
	{name: "mbulk/bulk over proto-max-bulk-len", in: "*1\r\n$536870913\r\n", want: "*1\r\n", err: msgInvalidBulk},
	{name: "mbulk/bulk over limit", in: "*1\r\n$17\r\n", want: "*1\r\n", err: msgInvalidBulk, lim: &smallLimits},
	{name: "mbulk/bulk at limit", in: "*1\r\n$16\r\n0123456789abcdef\r\n", want: mbulk("0123456789abcdef"), lim: &smallLimits},
	{name: "mbulk/second bulk invalid", in: "*2\r\n$4\r\nECHO\r\n$x\r\n", want: "*2\r\n$4\r\nECHO\r\n", err: msgInvalidBulk},
	{name: "mbulk/error after earlier commands", in: "*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$-3\r\n",
		want: mbulk("PING") + mbulk("PING") + "*2\r\n$4\r\nECHO\r\n", err: msgInvalidBulk},

	// The first byte of a bulk must be '$'; Redis looks only once the line's '\r' is there.
	{name: "dollar/letter", in: "*1\r\nX4\r\nPING\r\n", want: "*1\r\n", err: "Protocol error: expected '$', got 'X'"},
	{name: "dollar/colon", in: "*1\r\n:1\r\n", want: "*1\r\n", err: "Protocol error: expected '$', got ':'"},
	{name: "dollar/star", in: "*2\r\n$4\r\nECHO\r\n*1\r\n", want: "*2\r\n$4\r\nECHO\r\n", err: "Protocol error: expected '$', got '*'"},
	{name: "dollar/cr shown as space", in: "*1\r\n\r\n", want: "*1\r\n", err: "Protocol error: expected '$', got ' '"},
	{name: "dollar/lf shown as space", in: "*1\r\n\n\r\n", want: "*1\r\n", err: "Protocol error: expected '$', got ' '"},
	{name: "dollar/high byte as is", in: "*1\r\n\xff\r\n", want: "*1\r\n", err: "Protocol error: expected '$', got '\xff'"},
	{name: "dollar/waits for cr", in: "*1\r\nX4", want: "*1\r\n"},
	{name: "dollar/waits for byte after cr", in: "*1\r\nX4\r", want: "*1\r\n"},

	// Length lines longer than PROTO_INLINE_MAX_SIZE without their '\r'.
	{name: "toobig/mbulk at limit", in: "*" + strings.Repeat("0", 65535), want: ""},
	{name: "toobig/mbulk over limit", in: "*" + strings.Repeat("0", 65536), err: msgTooBigMbulk},
	{name: "toobig/mbulk small at limit", in: "*1234567", want: "", lim: &smallLimits},
	{name: "toobig/mbulk small over limit", in: "*12345678", err: msgTooBigMbulk, lim: &smallLimits},
	{name: "toobig/mbulk small cr at limit", in: "*1234567\r\n", err: msgInvalidMbulk, lim: &smallLimits},
	{name: "toobig/bulk at limit", in: "*1\r\n$" + strings.Repeat("1", 65535), want: "*1\r\n"},
	{name: "toobig/bulk over limit", in: "*1\r\n$" + strings.Repeat("1", 65536), want: "*1\r\n", err: msgTooBigBulk},
	{name: "toobig/bulk before dollar check", in: "*1\r\nX" + strings.Repeat("1", 65536), want: "*1\r\n", err: msgTooBigBulk},
	{name: "toobig/bulk small over limit", in: "*1\r\n$12345678\r\n", want: "*1\r\n", err: msgTooBigBulk, lim: &smallLimits},
	{name: "toobig/bulk small cr at limit", in: "*1\r\n$1234567\r\n", want: "*1\r\n", err: msgInvalidBulk, lim: &smallLimits},
	{name: "toobig/inline at limit", in: strings.Repeat("x", 65536), want: ""},
	{name: "toobig/inline over limit", in: strings.Repeat("x", 65537), err: msgTooBigInline},
	{name: "toobig/inline small at limit", in: "ECHO abc\n", want: mbulk("ECHO", "abc"), lim: &smallLimits},
	{name: "toobig/inline small crlf at limit", in: "ECHO ab\r\n", want: mbulk("ECHO", "ab"), lim: &smallLimits},
	{name: "toobig/inline small cr over limit", in: "ECHO abc\r\n", err: msgTooBigInline, lim: &smallLimits},
	{name: "toobig/inline small no newline", in: "123456789", err: msgTooBigInline, lim: &smallLimits},
	{name: "toobig/inline after command", in: "PING\nECHO abcd\n", want: mbulk("PING"), err: msgTooBigInline, lim: &smallLimits},

	// A NUL before a line's terminator hides it (strchr): the request waits for the limit.
	{name: "nul/count hides cr", in: "*1\x00\r\n$4\r", want: "", lim: &smallLimits},
	{name: "nul/count over limit", in: "*1\x00\r\n$4\r\n", err: msgTooBigMbulk, lim: &smallLimits},
	{name: "nul/bulk first byte", in: "*1\r\n\x00\r\n$4\r\nP", want: "*1\r\n", lim: &smallLimits},
	{name: "nul/bulk first byte over limit", in: "*1\r\n\x00\r\n$4\r\nPI", want: "*1\r\n", err: msgTooBigBulk, lim: &smallLimits},
	{name: "nul/bulk digits", in: "*1\r\n$1\x00\r\nab\r", want: "*1\r\n", lim: &smallLimits},
	{name: "nul/inline", in: "PING\x00\r\n", want: "", lim: &smallLimits},
	{name: "nul/inline counts newlines", in: "PING\x00\r\nPI", err: msgTooBigInline, lim: &smallLimits},
	{name: "nul/inline first byte", in: "\x00PINGPIN", want: "", lim: &smallLimits},
	{name: "nul/inline first byte over limit", in: "\x00PINGPING", err: msgTooBigInline, lim: &smallLimits},
	{name: "nul/count at default limit", in: "*1\x00\r\n" + pad64k, err: msgTooBigMbulk},
	{name: "nul/bulk at default limit", in: "*1\r\n\x00\r\n" + pad64k, want: "*1\r\n", err: msgTooBigBulk},
	{name: "nul/bulk digits at default limit", in: "*1\r\n$4\x00\r\nPING\r\n" + pad64k, want: "*1\r\n", err: msgTooBigBulk},
	{name: "nul/inline at default limit", in: "PING\x00\r\n" + pad64k, err: msgTooBigInline},
	{name: "nul/inside bulk data is data", in: "*1\r\n$1\r\n\x00\r\n", want: mbulk("\x00")},

	// Inline commands: sdssplitargs.
	{name: "inline/crlf", in: "PING\r\n", want: mbulk("PING")},
	{name: "inline/lf", in: "PING\n", want: mbulk("PING")},
	{name: "inline/args", in: "SET k v\r\n", want: mbulk("SET", "k", "v")},
	{name: "inline/blanks", in: " \t SET\t k   v \r\n", want: mbulk("SET", "k", "v")},
	{name: "inline/partial line", in: "ECHO ab", want: ""},
	{name: "inline/empty crlf", in: "\r\n", want: ""},
	{name: "inline/empty lf", in: "\n", want: ""},
	{name: "inline/blank line", in: " \t\v\f\r\r\n", want: ""},
	{name: "inline/empty lines then command", in: "\r\n\n  \nPING\r\n", want: mbulk("PING")},
	{name: "inline/cr inside line splits", in: "ECHO a\rb\n", want: mbulk("ECHO", "a", "b")},
	{name: "inline/only last cr stripped", in: "ECHO a\r\r\n", want: mbulk("ECHO", "a")},
	{name: "inline/vt ff inside token kept", in: "ECHO a\vb\fc\n", want: mbulk("ECHO", "a\vb\fc")},
	{name: "inline/vt ff between tokens", in: "\vECHO \f\vx\n", want: mbulk("ECHO", "x")},
	{name: "inline/dollar line is inline", in: "$4\r\n", want: mbulk("$4")},
	{name: "inline/then multibulk", in: "PING\r\n*1\r\n$4\r\nPING\r\n", want: mbulk("PING") + mbulk("PING")},
	{name: "inline/high bytes", in: "ECHO \xff\xfe\x80\n", want: mbulk("ECHO", "\xff\xfe\x80")},
	{name: "inline/double quotes", in: "ECHO \"hello world\"\r\n", want: mbulk("ECHO", "hello world")},
	{name: "inline/single quotes", in: "ECHO 'hello world'\r\n", want: mbulk("ECHO", "hello world")},
	{name: "inline/empty quoted args", in: "ECHO \"\" ''\r\n", want: mbulk("ECHO", "", "")},
	{name: "inline/double escapes", in: `ECHO "\n\r\t\b\a\\\"\q\'"` + "\n", want: mbulk("ECHO", "\n\r\t\b\a\\\"q'")},
	{name: "inline/hex escapes", in: `ECHO "\x41\xff\x00\xAb"` + "\n", want: mbulk("ECHO", "A\xff\x00\xab")},
	{name: "inline/bad hex escape", in: `ECHO "\x4g\x"` + "\n", want: mbulk("ECHO", "x4gx")},
	{name: "inline/short hex escape at end", in: `ECHO "\x4"` + "\n", want: mbulk("ECHO", "x4")},
	{name: "inline/single quote escapes", in: `ECHO 'a\'b\n\\x'` + "\n", want: mbulk("ECHO", `a'b\n\\x`)},
	{name: "inline/quotes open mid token", in: "ECHO a\"b c\" d'e f'\n", want: mbulk("ECHO", "ab c", "de f")},
	{name: "inline/raw cr lf tab in quotes", in: "ECHO \"a\rb\tc\"\n", want: mbulk("ECHO", "a\rb\tc")},
	{name: "inline/quote then vt", in: "ECHO \"a\"\vb\n", want: mbulk("ECHO", "a", "b")},
	{name: "inline/quote then cr", in: "ECHO \"a\"\rb\n", want: mbulk("ECHO", "a", "b")},
	{name: "inline/quote at end before crlf", in: "ECHO 'a'\r\n", want: mbulk("ECHO", "a")},
	{name: "inline/quote char inside other quotes", in: "ECHO 'a\"b' \"c'd\"\n", want: mbulk("ECHO", "a\"b", "c'd")},
	{name: "inline/star inside line", in: "ECHO *1\n", want: mbulk("ECHO", "*1")},
	{name: "unbalanced/double after quote", in: "ECHO \"a\"b\r\n", err: msgUnbalanced},
	{name: "unbalanced/single after quote", in: "ECHO 'a'b\r\n", err: msgUnbalanced},
	{name: "unbalanced/two quoted glued", in: "ECHO 'a''b'\r\n", err: msgUnbalanced},
	{name: "unbalanced/unterminated double", in: "ECHO \"abc\r\n", err: msgUnbalanced},
	{name: "unbalanced/unterminated single", in: "ECHO 'abc\n", err: msgUnbalanced},
	{name: "unbalanced/escaped closing quote", in: "ECHO \"abc\\\"\n", err: msgUnbalanced},
	{name: "unbalanced/backslash at end", in: "ECHO \"abc\\\n", err: msgUnbalanced},
	{name: "unbalanced/escaped single quote", in: "ECHO 'abc\\'\n", err: msgUnbalanced},
	{name: "unbalanced/after good commands", in: "PING\r\n*1\r\n$4\r\nPING\r\nECHO \"x\r\n",
		want: mbulk("PING") + mbulk("PING"), err: msgUnbalanced},
	{name: "unbalanced/waits for newline", in: "ECHO \"abc", want: ""},
}

// normFeed feeds in to a fresh normalizer in the given pieces and returns all it emitted and
// the error Msg ("" for none).
func normFeed(t testing.TB, lim Limits, pieces ...[]byte) (string, string) {
	t.Helper()
	n := NewNormalizer(lim)
	var out []byte
	var err error
	for _, p := range pieces {
		out, err = n.Feed(out, p)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not a *ProtocolError", err, err)
			}
			// The stream is dead: same error, nothing more.
			again, err2 := n.Feed(out, []byte("*1\r\n$4\r\nPING\r\n"))
			if err2 != err || len(again) != len(out) {
				t.Fatalf("Feed after error: %q, %v; want nothing, %v", again[len(out):], err2, err)
			}
			return string(out), pe.Msg
		}
		if len(n.line) > lim.MaxInlineLen {
			t.Fatalf("line fragment %d bytes > MaxInlineLen %d", len(n.line), lim.MaxInlineLen)
		}
	}
	return string(out), ""
}

// splitPoints are the boundaries at which to split an input in two: all of them for inputs up
// to 4 KiB; for the 64 KiB limit cases the first and last 80, every 997th and the 100 around
// the limit (all of them takes over half a minute). Byte-by-byte feeding, which
// every case also gets, carries the state across every boundary of every input.
func splitPoints(n int) []int {
	var ks []int
	for k := 0; k <= n; k++ {
		if n <= 4096 || k < 80 || k > n-80 || k%997 == 0 || (k > 65500 && k < 65600) {
			ks = append(ks, k)
		}
	}
	return ks
}

func (c normCase) limits() Limits {
	if c.lim != nil {
		return *c.lim
	}
	return DefaultLimits()
}

func TestNormalizer(t *testing.T) {
	for _, tc := range normCases {
		t.Run(tc.name, func(t *testing.T) {
			lim := tc.limits()
			in := []byte(tc.in)
			got, gotErr := normFeed(t, lim, in)
			if got != tc.want || gotErr != tc.err {
				t.Fatalf("Feed(%q)\n got  %q, err %q\n want %q, err %q", trunc(tc.in), trunc(got), gotErr, trunc(tc.want), tc.err)
			}
			for _, k := range splitPoints(len(in)) {
				got, gotErr := normFeed(t, lim, in[:k], in[k:])
				if got != tc.want || gotErr != tc.err {
					t.Fatalf("split at %d:\n got  %q, err %q\n want %q, err %q", k, trunc(got), gotErr, trunc(tc.want), tc.err)
				}
			}
			bytewise := make([][]byte, len(in))
			for i := range in {
				bytewise[i] = in[i : i+1]
			}
			got, gotErr = normFeed(t, lim, bytewise...)
			if got != tc.want || gotErr != tc.err {
				t.Fatalf("byte by byte:\n got  %q, err %q\n want %q, err %q", trunc(got), gotErr, trunc(tc.want), tc.err)
			}
			if _, err := canonicalPrefix([]byte(got)); err != nil {
				t.Fatalf("output not canonical: %v", err)
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 200 {
		return s[:100] + "..." + s[len(s)-100:]
	}
	return s
}

func TestProtocolError(t *testing.T) {
	tests := []struct {
		name string
		err  *ProtocolError
		want string
	}{
		{"invalid bulk", errInvalidBulkLen, "-ERR Protocol error: invalid bulk length\r\n"},
		{"expected dollar", errExpectedDollar('x'), "-ERR Protocol error: expected '$', got 'x'\r\n"},
		{"expected dollar cr", errExpectedDollar('\r'), "-ERR Protocol error: expected '$', got ' '\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(tc.err.Reply()); got != tc.want {
				t.Fatalf("Reply() = %q, want %q", got, tc.want)
			}
			if got, want := tc.err.Error(), "resp: "+tc.want[5:len(tc.want)-2]; got != want {
				t.Fatalf("Error() = %q, want %q", got, want)
			}
		})
	}
}

func TestString2ll(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"1", 1, true}, {"-1", -1, true}, {"9223372036854775807", 1<<63 - 1, true},
		{"-9223372036854775808", -1 << 63, true}, {"9223372036854775808", 0, false},
		{"-9223372036854775809", 0, false}, {"18446744073709551615", 0, false},
		{"99999999999999999999", 0, false}, {"", 0, false}, {"-", 0, false}, {"-0", 0, false},
		{"00", 0, false}, {"01", 0, false}, {"+1", 0, false}, {" 1", 0, false}, {"1 ", 0, false},
		{"1a", 0, false}, {"0x1", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := ParseInt([]byte(tc.in))
			if got != tc.want || ok != tc.ok {
				t.Fatalf("ParseInt(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// redisExchange sends in to the server on a fresh connection and returns everything the server
// sends back until it closes the connection (or a timeout, reported as an error).
func redisExchange(t *testing.T, addr string, in []byte) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	go func() { _, _ = c.Write(in) }() // Redis may close before it read everything
	got, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, io.EOF) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("redis-server did not close the connection; got %q", trunc(string(got)))
		}
		// A reset after the error reply (unread input) is fine: the reply came first.
	}
	return got
}

// redisSilent checks that the server sends nothing and keeps the connection open after in.
func redisSilent(t *testing.T, addr string, in []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(in); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	got, err := io.ReadAll(c)
	var ne net.Error
	if len(got) > 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("redis-server replied %q, %v; want it to wait for more input", got, err)
	}
}

const quitCmd = "*1\r\n$4\r\nQUIT\r\n"

// TestNormalizerMatchesRedis sends every default-limits table input to a real redis-server and
// checks that Redis answers it exactly as it answers the normalized commands, followed by
// ProtocolError.Reply() when the normalizer reports an error.
func TestNormalizerMatchesRedis(t *testing.T) {
	srv := redistest.Start(t)
	for _, tc := range normCases {
		if tc.lim != nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			n := NewNormalizer(DefaultLimits())
			out, err := n.Feed(nil, []byte(tc.in))
			complete, cerr := canonicalPrefix(out)
			if cerr != nil {
				t.Fatal(cerr)
			}
			switch {
			case err != nil:
				// Redis answers the complete commands before the bad one, then the error, then closes.
				want := redisExchange(t, srv.Addr(), append(out[:complete:complete], quitCmd...))
				want = append(bytes.TrimSuffix(want, []byte("+OK\r\n")), err.(*ProtocolError).Reply()...)
				got := redisExchange(t, srv.Addr(), []byte(tc.in))
				if !bytes.Equal(got, want) {
					t.Fatalf("redis-server replied %q\nwant %q", trunc(string(got)), trunc(string(want)))
				}
			case n.state == stStart:
				want := redisExchange(t, srv.Addr(), append(out, quitCmd...))
				got := redisExchange(t, srv.Addr(), []byte(tc.in+quitCmd))
				if !bytes.Equal(got, want) {
					t.Fatalf("redis-server replied %q to the input, %q to the normalized commands", trunc(string(got)), trunc(string(want)))
				}
			default:
				// The input ends mid-request: Redis must be waiting for more, not replying.
				t.Parallel()
				redisSilent(t, srv.Addr(), []byte(tc.in))
			}
		})
	}
}

// TestRedisUnauthenticatedLimits records what the normalizer deliberately leaves out: with a
// password set, Redis 7 refuses big requests from clients that have not authenticated yet.
func TestRedisUnauthenticatedLimits(t *testing.T) {
	srv := redistest.Start(t, "--requirepass", "pw")
	tests := []struct{ name, in, want string }{
		{"multibulk over 10", "*11\r\n", "-ERR Protocol error: unauthenticated multibulk length\r\n"},
		{"bulk over 16384", "*1\r\n$16385\r\n", "-ERR Protocol error: unauthenticated bulk length\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := redisExchange(t, srv.Addr(), []byte(tc.in)); string(got) != tc.want {
				t.Fatalf("redis-server replied %q, want %q", got, tc.want)
			}
			if _, err := NewNormalizer(DefaultLimits()).Feed(nil, []byte(tc.in)); err != nil {
				t.Fatalf("normalizer refused %q: %v (the auth limits belong to the proxy)", tc.in, err)
			}
		})
	}
}

func TestConnRead(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	c := NewConn(server, DefaultLimits())
	defer c.Close()
	in := "PING\r\n*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\nECHO \"x\\x41\"\n"
	go func() {
		for i := range len(in) { // one byte per write: Read must wait for whole output
			_, _ = client.Write([]byte{in[i]})
		}
	}()
	want := mbulk("PING") + mbulk("ECHO", "abc") + mbulk("ECHO", "xA")
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestConnProtocolError(t *testing.T) {
	tests := []struct {
		name, in, want, reply string
	}{
		// Only whole commands are handed on before the error: the part of the bad one is not.
		{"after commands", "PING\r\n*1\r\n$x\r\n", mbulk("PING"), "-ERR Protocol error: invalid bulk length\r\n"},
		{"first bytes", "*1\r\n+\r\n", "", "-ERR Protocol error: expected '$', got '+'\r\n"},
		{"nothing before", "ECHO \"a\r\n", "", "-ERR Protocol error: unbalanced quotes in request\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			c := NewConn(server, DefaultLimits())
			defer c.Close()
			replied := make(chan []byte, 1)
			go func() {
				_, _ = client.Write([]byte(tc.in))
				b := make([]byte, 256)
				n, _ := client.Read(b)
				replied <- b[:n]
			}()
			var got []byte
			buf := make([]byte, 3) // small reads: the pending output is handed out in pieces
			var err error
			for err == nil {
				var n int
				n, err = c.Read(buf)
				got = append(got, buf[:n]...)
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) || string(pe.Reply()) != tc.reply {
				t.Fatalf("Read error %v, want %q", err, tc.reply)
			}
			if string(got) != tc.want {
				t.Fatalf("Read returned %q before the error, want %q", got, tc.want)
			}
			select {
			case r := <-replied:
				if string(r) != tc.reply {
					t.Fatalf("client got %q, want %q", r, tc.reply)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("client got no reply")
			}
			// Further reads return the same error and write nothing more.
			if n, err2 := c.Read(buf); n != 0 || err2 != err {
				t.Fatalf("Read after error = %d, %v; want 0, %v", n, err2, err)
			}
		})
	}
}

func TestConnReadErrorAfterData(t *testing.T) {
	client, server := net.Pipe()
	c := NewConn(server, DefaultLimits())
	go func() {
		_, _ = client.Write([]byte("PING\r\nECHO"))
		client.Close()
	}()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != mbulk("PING") {
		t.Fatalf("ReadAll = %q, %v; want %q, nil (EOF)", got, err, mbulk("PING"))
	}
}

// scriptConn returns the scripted reads in order.
type scriptConn struct {
	net.Conn
	reads []scriptRead
}

type scriptRead struct {
	data string
	err  error
}

func (s *scriptConn) Read(p []byte) (int, error) {
	if len(s.reads) == 0 {
		return 0, io.EOF
	}
	r := s.reads[0]
	s.reads = s.reads[1:]
	return copy(p, r.data), r.err
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// TestConnReadErrorNotSticky: a read deadline error is returned once; the stream goes on.
func TestConnReadErrorNotSticky(t *testing.T) {
	c := NewConn(&scriptConn{reads: []scriptRead{{"PI", nil}, {"", timeoutError{}}, {"NG\r\n", nil}}}, DefaultLimits())
	buf := make([]byte, 64)
	if n, err := c.Read(buf); n != 0 || !errors.Is(err, timeoutError{}) {
		t.Fatalf("first Read = %d, %v; want 0, timeout", n, err)
	}
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != mbulk("PING") {
		t.Fatalf("second Read = %q, %v; want %q", buf[:n], err, mbulk("PING"))
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("third Read = %d, %v; want 0, EOF", n, err)
	}
}

// overlapConn records whether two Writes ever ran at the same time.
type overlapConn struct {
	net.Conn
	in      atomic.Int32
	overlap atomic.Bool
	mu      sync.Mutex
	written bytes.Buffer
}

func (o *overlapConn) Write(b []byte) (int, error) {
	if o.in.Add(1) > 1 {
		o.overlap.Store(true)
	}
	defer o.in.Add(-1)
	for _, x := range b { // slow, byte by byte, to widen the window
		o.mu.Lock()
		o.written.WriteByte(x)
		o.mu.Unlock()
	}
	return len(b), nil
}

func (o *overlapConn) Read(b []byte) (int, error) { return copy(b, "*x\r\n"), nil }

func TestConnWriteSerialized(t *testing.T) {
	oc := &overlapConn{}
	c := NewConn(oc, DefaultLimits())
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				_, _ = c.Write([]byte("+OK\r\n"))
			}
		}()
	}
	_, err := c.Read(make([]byte, 64)) // writes the protocol error reply concurrently
	wg.Wait()
	if err == nil {
		t.Fatal("want protocol error")
	}
	if oc.overlap.Load() {
		t.Fatal("writes overlapped")
	}
	got := oc.written.String()
	if want := 8*50*len("+OK\r\n") + len("-ERR Protocol error: invalid multibulk length\r\n"); len(got) != want {
		t.Fatalf("wrote %d bytes, want %d", len(got), want)
	}
	if strings.Count(got, "-ERR Protocol error: invalid multibulk length\r\n") != 1 {
		t.Fatalf("error reply torn or missing: %q", got)
	}
}

// wrapListener hands redcon normalizing conns, as the proxy does.
type wrapListener struct{ net.Listener }

func (l wrapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c, DefaultLimits()), nil
}

// TestConnUnderRedcon runs redcon over Conn: redcon sees Redis' parsing and Redis' errors.
func TestConnUnderRedcon(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := redcon.NewServer("", func(conn redcon.Conn, cmd redcon.Command) {
		conn.WriteArray(len(cmd.Args))
		for _, a := range cmd.Args {
			conn.WriteBulk(a)
		}
	}, nil, nil)
	go func() { _ = srv.Serve(wrapListener{ln}) }()
	defer srv.Close()

	tests := []struct{ name, in, want string }{
		{"inline hex escapes", "ECHO \"a\\x41\" 'b c'\r\n", "*3\r\n$4\r\nECHO\r\n$2\r\naA\r\n$3\r\nb c\r\n"},
		{"empty multibulk ignored", "*0\r\n*1\r\n$1\r\nx\r\n", "*1\r\n$1\r\nx\r\n"},
		{"loose crlf", "*1\rX$1\rYx\r\n", "*1\r\n$1\r\nx\r\n"},
		{"error after command", "*1\r\n$1\r\nx\r\n*1\r\n$+1\r\n", "*1\r\n$1\r\nx\r\n-ERR Protocol error: invalid bulk length\r\n"},
		{"error text", "*1\r\n!\r\n", "-ERR Protocol error: expected '$', got '!'\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte(tc.in)); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(tc.want))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("read: %v (got %q)", err, got)
			}
			if string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func setPipeline(n int) []byte {
	var b []byte
	for i := range n {
		b = append(b, mbulk("SET", "key:"+strconv.Itoa(1000+i), "value-0123456789")...)
	}
	return b
}

func BenchmarkNormalizer(b *testing.B) {
	big := append([]byte("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$1048576\r\n"), bytes.Repeat([]byte("v"), 1<<20)...)
	big = append(big, "\r\n"...)
	var inline []byte
	for i := range 16 {
		inline = append(inline, "SET key:"+strconv.Itoa(1000+i)+" value-0123456789\r\n"...)
	}
	benches := []struct {
		name  string
		in    []byte
		chunk int
	}{
		{"set-pipeline-16", setPipeline(16), 0},
		{"set-pipeline-16/chunk-64", setPipeline(16), 64},
		{"inline-set-16", inline, 0},
		{"bulk-1MiB", big, 0},
		{"bulk-1MiB/chunk-16KiB", big, 16 << 10},
	}
	for _, bc := range benches {
		b.Run(bc.name, func(b *testing.B) {
			n := NewNormalizer(DefaultLimits())
			dst := make([]byte, 0, len(bc.in)+4096)
			chunk := bc.chunk
			if chunk == 0 {
				chunk = len(bc.in)
			}
			b.SetBytes(int64(len(bc.in)))
			b.ReportAllocs()
			for b.Loop() {
				for i := 0; i < len(bc.in); i += chunk {
					var err error
					dst, err = n.Feed(dst[:0], bc.in[i:min(i+chunk, len(bc.in))])
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// loopConn serves the same client bytes forever.
type loopConn struct {
	net.Conn
	data []byte
	off  int
}

func (l *loopConn) Read(p []byte) (int, error) {
	k := copy(p, l.data[l.off:])
	l.off = (l.off + k) % len(l.data)
	return k, nil
}

func BenchmarkConnRead(b *testing.B) {
	in := setPipeline(16)
	c := NewConn(&loopConn{data: in}, DefaultLimits())
	p := make([]byte, 4096)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		for got := 0; got < len(in); {
			n, err := c.Read(p)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}

// TestQueryBufLimit: a bulk that cannot fit in MaxQueryBuf ends the stream silently, whether
// its bytes arrive whole (the fast path) or in pieces; one that fits passes.
func TestQueryBufLimit(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxQueryBuf = 16
	fits := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$14\r\n" + strings.Repeat("x", 14) + "\r\n"
	over := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$15\r\n" + strings.Repeat("x", 15) + "\r\n"
	for _, step := range []int{1, 7, len(over)} {
		for _, tc := range []struct {
			in      string
			refused bool
		}{{fits, false}, {over, true}} {
			n := NewNormalizer(lim)
			var out []byte
			var err error
			for i := 0; i < len(tc.in) && err == nil; i += step {
				out, err = n.Feed(out, []byte(tc.in[i:min(i+step, len(tc.in))]))
			}
			var pe *ProtocolError
			switch {
			case tc.refused && (!errors.As(err, &pe) || !pe.Silent):
				t.Errorf("step %d, %q: err %v, want a silent protocol error", step, tc.in[:20], err)
			case !tc.refused && (err != nil || string(out) != tc.in):
				t.Errorf("step %d: %q %v, want it passed", step, out, err)
			}
		}
	}
}

// TestConnHandsOnWholeCommands: a command that arrives in small pieces reaches the reader only
// when it is whole (redcon re-parses an incomplete command on every read: in pieces, a large
// command would cost the square of its size), and the whole commands before it are not held.
func TestConnHandsOnWholeCommands(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	c := NewConn(server, DefaultLimits())
	defer c.Close()
	first := "*1\r\n$4\r\nPING\r\n"
	big := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5000\r\n" + strings.Repeat("v", 5000) + "\r\n"
	var started atomic.Int64 // bytes whose Write has begun
	go func() {
		started.Add(int64(len(first) + 10))
		_, _ = client.Write([]byte(first + big[:10]))
		for i := 10; i < len(big); i += 100 {
			started.Add(int64(min(100, len(big)-i)))
			_, _ = client.Write([]byte(big[i:min(i+100, len(big))]))
		}
	}()
	buf := make([]byte, 64<<10)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != first {
		t.Fatalf("first read: %q %v, want the whole command before the partial one", buf[:n], err)
	}
	n, err = c.Read(buf)
	if got := started.Load(); got != int64(len(first)+len(big)) {
		t.Fatalf("a part of the large command was handed on after %d of its bytes were sent", got-int64(len(first)))
	}
	if err != nil || string(buf[:n]) != big {
		t.Fatalf("second read: %d bytes %v, want the whole %d-byte command", n, err, len(big))
	}
}

// TestNormalizerUnauthenticated: Redis' limits before authentication, and one command at a
// time: what the next one may be depends on what the caller does with this one (an AUTH).
func TestNormalizerUnauthenticated(t *testing.T) {
	n := NewNormalizer(DefaultLimits())
	n.SetUnauthenticated(true)
	two := mbulk("AUTH", "pw") + mbulk("GET", "k")
	out, err := n.Feed(nil, []byte(two))
	if err != nil || string(out) != mbulk("AUTH", "pw") || n.Used() != len(mbulk("AUTH", "pw")) {
		t.Fatalf("first feed: %q %v used %d", out, err, n.Used())
	}
	n.SetUnauthenticated(false)
	rest := two[n.Used():]
	if out, err = n.Feed(nil, []byte(rest)); err != nil || string(out) != rest || n.Used() != len(rest) {
		t.Fatalf("second feed: %q %v used %d", out, err, n.Used())
	}
	for _, tc := range []struct{ in, want string }{
		{"*11\r\n", "-ERR Protocol error: unauthenticated multibulk length\r\n"},
		{"*1\r\n$16385\r\n", "-ERR Protocol error: unauthenticated bulk length\r\n"},
		{"*11\r\n$1\r\na\r\n", "-ERR Protocol error: unauthenticated multibulk length\r\n"},
	} {
		n := NewNormalizer(DefaultLimits())
		n.SetUnauthenticated(true)
		_, err := n.Feed(nil, []byte(tc.in))
		var pe *ProtocolError
		if !errors.As(err, &pe) || string(pe.Reply()) != tc.want {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
	}
}

// TestConnHoldsLargeCommandInChunks: a large command is held in chunks while it comes in (no
// copy of what came before, memory about its size), then handed on whole with the commands
// around it, and Ready counts what is at hand; a protocol error after part of one drops it.
func TestConnHoldsLargeCommandInChunks(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	c := NewConn(server, DefaultLimits())
	defer c.Close()
	big := mbulk("SET", "k", strings.Repeat("v", 5<<20+123))
	stream := mbulk("PING") + big + mbulk("GET", "k") + "*2\r\n$3\r\nGET\r\n$1\r\n"
	go func() {
		for i := 0; i < len(stream); i += 200 << 10 {
			_, _ = client.Write([]byte(stream[i:min(i+200<<10, len(stream))]))
		}
	}()
	buf := make([]byte, 64<<10)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != mbulk("PING") {
		t.Fatalf("first read: %q %v", buf[:n], err)
	}
	var got []byte
	n, err := c.Read(buf) // returns once the large command is whole
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, buf[:n]...)
	if len(c.held) < 4 {
		t.Fatalf("large command held in %d chunks, want one per MiB or so", len(c.held))
	}
	heldCap := 0
	for _, h := range c.held {
		heldCap += cap(h)
	}
	if heldCap > len(big)+len(big)/8 {
		t.Fatalf("%d bytes of chunks hold a %d-byte command", heldCap, len(big))
	}
	want := big + mbulk("GET", "k")
	if r := c.Ready(); r != len(want)-n {
		t.Fatalf("Ready %d, want %d", r, len(want)-n)
	}
	rest := make([]byte, len(want))
	n, err = c.Read(rest) // all of it at once, across the chunks (redcon parses after each read)
	if err != nil || n != len(want)-len(got) {
		t.Fatalf("read %d bytes (%v), want the %d at hand", n, err, len(want)-len(got))
	}
	got = append(got, rest[:n]...)
	if string(got) != want {
		t.Fatalf("got %d bytes, want the large command and the GET after it (%d bytes)", len(got), len(want))
	}
	if c.Ready() != 0 || c.held != nil {
		t.Fatalf("after: Ready %d, %d chunks held", c.Ready(), len(c.held))
	}

	// A protocol error after part of a large command: the part is never handed on.
	client2, server2 := net.Pipe()
	defer client2.Close()
	c2 := NewConn(server2, DefaultLimits())
	defer c2.Close()
	go func() {
		bad := "*3\r\n$3\r\nSET\r\n$3145728\r\n" + strings.Repeat("v", 3<<20) + "\r\nx\r\n" // "x" is not "$"
		_, _ = client2.Write([]byte(bad))
		_, _ = io.Copy(io.Discard, client2)
	}()
	for {
		n, err := c2.Read(buf)
		if n > 0 {
			t.Fatalf("handed on %d bytes of an incomplete command", n)
		}
		if err != nil {
			break
		}
	}
}

// TestReadBatchMarks: ReadBatch splits multibulk commands by the normalizer's marks, whether
// they arrive whole (its fast path) or in pieces (its checked path), and parses only what has
// no marks (inline commands, a large command held in chunks); the commands match Raw.
func TestReadBatchMarks(t *testing.T) {
	pipe := setPipeline(16)
	big := mbulk("SET", "k", strings.Repeat("v", 300))
	for _, tc := range []struct {
		name   string
		in     []byte
		piece  int
		parsed int
	}{
		{"whole", pipe, 0, 0},
		{"pieces-of-7", pipe, 7, 0},
		{"bytewise", pipe, 1, 0},
		{"non-canonical", []byte("*2\r\n$3\rxGETab$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"), 0, 0},
		{"inline", []byte("GET k\r\n" + mbulk("GET", "k")), 0, 1},
		{"held", []byte(big + mbulk("GET", "k")), 64, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			c := NewConn(server, DefaultLimits())
			defer c.Close()
			c.large, c.chunk = 100, 128
			go func() {
				for i := 0; i < len(tc.in); {
					n := len(tc.in) - i
					if tc.piece > 0 {
						n = min(n, tc.piece)
					}
					if _, err := client.Write(tc.in[i : i+n]); err != nil {
						return
					}
					i += n
				}
			}()
			want, _ := NewNormalizer(DefaultLimits()).Feed(nil, tc.in)
			var got []byte
			var cmds []redcon.Command
			var args [][]byte
			for len(got) < len(want) {
				var err error
				if cmds, args, err = c.ReadBatch(cmds[:0], args[:0]); err != nil {
					t.Fatal(err)
				}
				for _, cmd := range cmds {
					enc := redcon.AppendArray(nil, len(cmd.Args))
					for _, a := range cmd.Args {
						enc = redcon.AppendBulk(enc, a)
					}
					if !bytes.Equal(enc, cmd.Raw) {
						t.Fatalf("Args %q do not match Raw %q", cmd.Args, cmd.Raw)
					}
					got = append(got, cmd.Raw...)
				}
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("got %q\nwant %q", got, want)
			}
			if c.parsed != tc.parsed {
				t.Errorf("%d commands parsed without marks, want %d", c.parsed, tc.parsed)
			}
		})
	}
}

// TestReadBatchAfterRead: the marks stop with the first Read; ReadBatch then refuses.
func TestReadBatchAfterRead(t *testing.T) {
	c := NewConn(&loopConn{data: setPipeline(2)}, DefaultLimits())
	if _, err := c.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadBatch(nil, nil); !errors.Is(err, errBatchAfterRead) {
		t.Fatalf("ReadBatch after Read: %v", err)
	}
}

func BenchmarkConnReadBatch(b *testing.B) {
	in := setPipeline(16)
	c := NewConn(&loopConn{data: in}, DefaultLimits())
	var cmds []redcon.Command
	var args [][]byte
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		for got := 0; got < 16; {
			var err error
			if cmds, args, err = c.ReadBatch(cmds[:0], args[:0]); err != nil {
				b.Fatal(err)
			}
			got += len(cmds)
		}
	}
}

// TestDeferClose: once a read has returned EOF, Close hands the socket to the SetDeferClose
// func (once, however often Close is called) instead of closing it; before EOF, or when the
// func refuses it, Close closes at once.
func TestDeferClose(t *testing.T) {
	for _, tc := range []struct {
		name      string
		eof, take bool
		handed    int
		closed    bool
	}{
		{"after EOF", true, true, 1, false},
		{"after EOF, refused", true, false, 1, true},
		{"before EOF", false, true, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, pipe := net.Pipe()
			defer client.Close()
			server := &countClose{Conn: pipe}
			c := NewConn(server, Limits{})
			handed := 0
			c.SetDeferClose(func(net.Conn) bool { handed++; return tc.take })
			if tc.eof {
				client.Close()
				if _, _, err := c.ReadBatch(nil, nil); err != io.EOF {
					t.Fatalf("read: %v, want EOF", err)
				}
			}
			_ = c.Close()
			_ = c.Close()
			if handed != tc.handed {
				t.Errorf("handed on %d times, want %d", handed, tc.handed)
			}
			if closed := server.n > 0; closed != tc.closed {
				t.Errorf("socket closed %d times, want closed: %v", server.n, tc.closed)
			}
		})
	}
}

// countClose counts its Close calls.
type countClose struct {
	net.Conn
	n int
}

func (c *countClose) Close() error { c.n++; return c.Conn.Close() }

// TestSizeRaw: a connection reads into 4 KiB until a read fills it, then into 16 KiB until 64
// reads in a row would have fitted 4 KiB (an idle client holds 4 KiB, not 16, while it waits).
func TestSizeRaw(t *testing.T) {
	c := &Conn{raw: make([]byte, connReadMin)}
	c.sizeRaw(100)
	if len(c.raw) != connReadMin {
		t.Fatalf("a small read grew the buffer to %d", len(c.raw))
	}
	c.sizeRaw(connReadMin)
	if len(c.raw) != connReadSize {
		t.Fatalf("a full read left the buffer at %d", len(c.raw))
	}
	for range shrinkReads - 1 {
		c.sizeRaw(10)
	}
	c.sizeRaw(connReadMin + 1) // a larger read starts the count again
	for range shrinkReads - 1 {
		c.sizeRaw(10)
	}
	if len(c.raw) != connReadSize {
		t.Fatalf("shrank to %d before %d small reads in a row", len(c.raw), shrinkReads)
	}
	c.sizeRaw(10)
	if len(c.raw) != connReadMin {
		t.Fatalf("after %d small reads in a row the buffer is %d", shrinkReads, len(c.raw))
	}
}
