package resp

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzAppendReply checks that the reply relay never panics on arbitrary upstream bytes and that
// every frame it returns is a prefix-exact slice of the input (raw relay, nothing re-encoded).
func FuzzAppendReply(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "$3\r\nfoo\r\n", "*2\r\n:1\r\n$-1\r\n", "%1\r\n+a\r\n~1\r\n#f\r\n",
		"|1\r\n+a\r\n+b\r\n:1\r\n", ">2\r\n+x\r\n=5\r\ntxt:a\r\n", "*-1\r\n", "$99999999999\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 16)
		var out []byte
		for range 64 {
			var err error
			before := len(out)
			out, err = AppendReply(out, br)
			if err != nil {
				break
			}
			if before == len(out) {
				t.Fatal("empty frame")
			}
		}
		if !bytes.HasPrefix(in, out) {
			t.Fatalf("relayed bytes are not the input's prefix: %q vs %q", out, in)
		}
	})
}
