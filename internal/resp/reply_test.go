package resp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestAppendReply(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string // frames in order
	}{
		{"simple", "+OK\r\n", []string{"+OK\r\n"}},
		{"error", "-ERR bad\r\n", []string{"-ERR bad\r\n"}},
		{"int", ":42\r\n", []string{":42\r\n"}},
		{"bulk", "$3\r\nfoo\r\n", []string{"$3\r\nfoo\r\n"}},
		{"bulk with crlf inside", "$4\r\na\r\nb\r\n", []string{"$4\r\na\r\nb\r\n"}},
		{"null bulk", "$-1\r\n", []string{"$-1\r\n"}},
		{"empty bulk", "$0\r\n\r\n", []string{"$0\r\n\r\n"}},
		{"null array", "*-1\r\n", []string{"*-1\r\n"}},
		{"empty array", "*0\r\n", []string{"*0\r\n"}},
		{"nested", "*2\r\n*1\r\n:1\r\n$1\r\nx\r\n+OK\r\n", []string{"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n", "+OK\r\n"}},
		{"resp3 map", "%2\r\n+a\r\n:1\r\n+b\r\n_\r\n:7\r\n", []string{"%2\r\n+a\r\n:1\r\n+b\r\n_\r\n", ":7\r\n"}},
		{"resp3 set double bool big", "~3\r\n,1.5\r\n#t\r\n(123\r\n", []string{"~3\r\n,1.5\r\n#t\r\n(123\r\n"}},
		{"resp3 verbatim and blob error", "=7\r\ntxt:abc\r\n!3\r\nerr\r\n", []string{"=7\r\ntxt:abc\r\n", "!3\r\nerr\r\n"}},
		{"push", ">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n", []string{">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"}},
		{"attribute before reply", "|1\r\n+k\r\n+v\r\n:5\r\n", []string{"|1\r\n+k\r\n+v\r\n:5\r\n"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := bufio.NewReaderSize(strings.NewReader(tc.in), 16)
			for i, want := range tc.want {
				got, err := AppendReply(nil, r)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if string(got) != want {
					t.Fatalf("frame %d: got %q want %q", i, got, want)
				}
			}
			if _, err := AppendReply(nil, r); err != io.EOF {
				t.Fatalf("after last frame: got %v, want EOF", err)
			}
		})
	}
}

func TestAppendReplyErrors(t *testing.T) {
	for _, in := range []string{"?x\r\n", "$x\r\n", "*1x\r\n", "+OK\n", "\r\n", "$-\r\n"} {
		t.Run(strings.TrimSpace(in), func(t *testing.T) {
			_, err := AppendReply(nil, bufio.NewReader(strings.NewReader(in)))
			if !errors.Is(err, ErrBadReply) {
				t.Fatalf("got %v, want ErrBadReply", err)
			}
		})
	}
	t.Run("truncated bulk", func(t *testing.T) {
		_, err := AppendReply(nil, bufio.NewReader(strings.NewReader("$5\r\nab")))
		if err != io.ErrUnexpectedEOF {
			t.Fatalf("got %v", err)
		}
	})
}

func TestAppendReplyLargeBulk(t *testing.T) {
	val := bytes.Repeat([]byte("v\r\n\x00"), 1<<18) // 1 MiB with CRLF and NUL inside
	in := append([]byte("$1048576\r\n"), val...)
	in = append(in, "\r\n"...)
	got, err := AppendReply(make([]byte, 0, 8), bufio.NewReader(bytes.NewReader(in)))
	if err != nil || !bytes.Equal(got, in) {
		t.Fatalf("err=%v equal=%v", err, bytes.Equal(got, in))
	}
}

func BenchmarkAppendReply(b *testing.B) {
	in := bytes.Repeat([]byte("*2\r\n$3\r\nfoo\r\n:1\r\n"), 64)
	rd := bytes.NewReader(in)
	br := bufio.NewReader(rd)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		rd.Reset(in)
		br.Reset(rd)
		buf = buf[:0]
		for range 64 {
			var err error
			if buf, err = AppendReply(buf, br); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestReplyLengthOverflow: a length of 19 digits would overflow int64 (to a negative length,
// read as a null): both readers refuse it as a malformed reply.
func TestReplyLengthOverflow(t *testing.T) {
	for _, in := range []string{"$9999999999999999999\r\n", "*9999999999999999999\r\n", "%9223372036854775807\r\n"} {
		if _, err := AppendReply(nil, bufio.NewReader(strings.NewReader(in))); !errors.Is(err, ErrBadReply) {
			t.Errorf("AppendReply(%q): %v, want ErrBadReply", in, err)
		}
		if _, err := ReplyLen([]byte(in)); !errors.Is(err, ErrBadReply) {
			t.Errorf("ReplyLen(%q): %v, want ErrBadReply", in, err)
		}
	}
	if n, err := ReplyLen([]byte("*-1\r\n")); err != nil || n != 5 {
		t.Errorf("null array: %d %v", n, err)
	}
}
