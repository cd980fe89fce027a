package proxy

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// chunkReader hands out data in pieces whose sizes cycle through sizes, so commands arrive
// split at every possible place and batches of every length.
type chunkReader struct {
	data  []byte
	sizes []int
	n     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), len(r.data), r.sizes[r.n%len(r.sizes)])
	r.n++
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

// canonicalCommands splits canonical multibulk (what the normalizer emits) into commands, each
// as its raw bytes and a copy of its arguments; an incomplete command at the end is left out.
func canonicalCommands(t *testing.T, b []byte) (raws [][]byte, args [][][]byte) {
	line := func(i int) (int, int) {
		end := bytes.Index(b[i:], []byte("\r\n"))
		if end < 0 {
			return -1, 0
		}
		n, err := strconv.Atoi(string(b[i+1 : i+end]))
		if err != nil {
			t.Fatalf("normalizer emitted a bad length at %d: %q", i, b[i:i+end])
		}
		return n, i + end + 2
	}
	for i := 0; i < len(b); {
		n, next := line(i)
		if n < 0 {
			return raws, args
		}
		var a [][]byte
		for range n {
			size, data := 0, 0
			if size, data = line(next); size < 0 || data+size+2 > len(b) {
				return raws, args
			}
			a = append(a, bytes.Clone(b[data:data+size]))
			next = data + size + 2
		}
		raws, args = append(raws, bytes.Clone(b[i:next])), append(args, a)
		i = next
	}
	return raws, args
}

// FuzzClientCommands drives the parsing half of the client-command path: client bytes through
// the normalizer, then through redcon's reader (the patched copy in third_party/redcon, which
// reuses its buffers between reads), delivered in chunks of fuzzed sizes. Every batch must hold
// exactly the next commands, byte for byte, when it is handed over. (That the proxy keeps
// nothing of a batch past it is for the differential and model tests to catch.)
func FuzzClientCommands(f *testing.F) {
	for _, s := range []string{
		"*1\r\n$4\r\nPING\r\n",
		"SET a b\r\nGET a\r\n",
		"*3\r\n$4\r\nHSET\r\n$10\r\nsession:10\r\n$6\r\nuserid\r\n",
		"*2\r\n$3\r\nGET\r\n$5000\r\n" + string(bytes.Repeat([]byte("x"), 5000)) + "\r\n*1\r\n$4\r\nPING\r\n",
		"MSET k1 v1 k2 v2 k3 v3 k4 v4 k5 v5 k6 v6 k7 v7 k8 v8 k9 v9 k10 v10\r\n",
		"*-1\r\n*0\r\n\r\n\"a\\x00b\" 'c d'\r\n",
	} {
		f.Add([]byte(s), []byte{1, 7, 200})
		f.Add(bytes.Repeat([]byte(s), 40), []byte{255, 3})
	}
	// A command of exactly 8192 bytes (so a read ends with it and redcon cuts its buffer back
	// to 4096 bytes), then one over 4 KiB: the patched grow-into-capacity branch.
	first := encode("SET", "k", strings.Repeat("v", 8163))
	if len(first) != 8192 {
		f.Fatalf("seed command is %d bytes", len(first))
	}
	f.Add(append(first, encode("SET", "k2", strings.Repeat("w", 6000))...), []byte{255})
	f.Fuzz(func(t *testing.T, data, chunks []byte) {
		out, _ := resp.NewNormalizer(resp.DefaultLimits()).Feed(nil, data)
		wantRaw, wantArgs := canonicalCommands(t, out)
		// redcon parses a partial command again from its start after every read, so tiny
		// chunks of a large input cost quadratic time: at most ~1024 reads per input.
		least := 1 + len(out)/1024
		sizes := []int{1 << 14}
		if len(chunks) > 0 {
			sizes = sizes[:0]
			for _, c := range chunks {
				sizes = append(sizes, max(least, 1+int(c)*37)) // 1 to ~9.4 KiB: around redcon's 4 KiB buffer
			}
		}
		rd := redcon.NewReader(&chunkReader{data: out, sizes: sizes})
		got := 0
		for {
			batch, err := rd.ReadCommands()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("redcon refused normalized input after %d commands: %v", got, err)
			}
			for _, cmd := range batch {
				if got >= len(wantRaw) {
					t.Fatalf("redcon returned more than the %d commands sent", len(wantRaw))
				}
				if !bytes.Equal(cmd.Raw, wantRaw[got]) {
					t.Fatalf("command %d: Raw %q, want %q", got, clip(cmd.Raw), clip(wantRaw[got]))
				}
				if len(cmd.Args) != len(wantArgs[got]) {
					t.Fatalf("command %d: %d args, want %d", got, len(cmd.Args), len(wantArgs[got]))
				}
				for j, a := range cmd.Args {
					if !bytes.Equal(a, wantArgs[got][j]) {
						t.Fatalf("command %d arg %d: %q, want %q", got, j, clip(a), clip(wantArgs[got][j]))
					}
				}
				got++
			}
		}
		if got != len(wantRaw) {
			t.Fatalf("redcon returned %d commands, want %d", got, len(wantRaw))
		}
	})
}
