package redcon

// Tests of the sessionproxy patch (PATCH.md): reused reader buffers, their bounds, and the
// copying mode of a detached connection.

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// parts hands out one string per Read, so each becomes its own batch.
type parts struct{ p []string }

func (r *parts) Read(b []byte) (int, error) {
	if len(r.p) == 0 {
		return 0, io.EOF
	}
	n := copy(b, r.p[0])
	if r.p[0] = r.p[0][n:]; r.p[0] == "" {
		r.p = r.p[1:]
	}
	return n, nil
}

func resp(args ...string) string {
	var b []byte
	b = AppendArray(b, len(args))
	for _, a := range args {
		b = AppendBulkString(b, a)
	}
	return string(b)
}

func argsOf(c Command) string {
	var s []string
	for _, a := range c.Args {
		s = append(s, string(a))
	}
	return strings.Join(s, " ")
}

func readBatch(t *testing.T, rd *Reader) []Command {
	t.Helper()
	cmds, err := rd.ReadCommands()
	if err != nil {
		t.Fatal(err)
	}
	return cmds
}

// A detached connection's commands must survive the reads of the goroutine that takes over
// (PubSub's bgrunner reads while the handler still loops over SUBSCRIBE's channels).
func TestPatchDetachKeepsCommands(t *testing.T) {
	rd := NewReader(&parts{p: []string{resp("SUBSCRIBE", "a", "b"), resp("SET", "x", "y")}})
	first := readBatch(t, rd)
	raw := string(first[0].Raw)
	rd.detach()
	second := readBatch(t, rd)
	if got := argsOf(first[0]); got != "SUBSCRIBE a b" || string(first[0].Raw) != raw {
		t.Fatalf("first batch changed by the next read: %q", got)
	}
	if got := argsOf(second[0]); got != "SET x y" {
		t.Fatalf("second batch: %q", got)
	}
}

// Without detaching, commands are reused: each batch is right when it is handed over.
func TestPatchBatches(t *testing.T) {
	big := strings.Repeat("v", 8192)
	in := []string{
		resp("SET", "k", big),                        // grows the buffer past 4096 bytes
		resp("SET", "k2", strings.Repeat("w", 6000)), // after the cut-back: grows into kept capacity
		resp("GET", "k") + resp("GET", "k2"),
		resp(append([]string{"MSET"}, strings.Split(strings.Repeat("a b ", 20), " ")[:40]...)...),
	}
	rd := NewReader(&parts{p: append([]string(nil), in...)})
	for i, want := range in {
		var got []byte
		for _, c := range readBatch(t, rd) {
			got = append(got, c.Raw...)
			var enc []byte
			enc = AppendArray(enc, len(c.Args))
			for _, a := range c.Args {
				enc = AppendBulk(enc, a)
			}
			if !bytes.Equal(enc, c.Raw) {
				t.Fatalf("batch %d: Args %q do not match Raw", i, argsOf(c))
			}
		}
		if string(got) != want {
			t.Fatalf("batch %d: got %d bytes, want %d", i, len(got), len(want))
		}
	}
}

// One huge batch must not pin its backings for the life of the connection.
func TestPatchBounds(t *testing.T) {
	many := make([]string, 20000)
	for i := range many {
		many[i] = "x"
	}
	huge := resp(append([]string{"MSET"}, many...)...)
	rd := NewReader(&parts{p: []string{huge, strings.Repeat(resp("PING"), 2000), resp("PING")}})
	readBatch(t, rd)
	readBatch(t, rd)
	readBatch(t, rd)
	if cap(rd.args) > maxKeptArgs || cap(rd.batch) > maxKeptCmds || cap(rd.buf) > maxKeptBuf {
		t.Fatalf("kept after small batches: args %d, cmds %d, buf %d",
			cap(rd.args), cap(rd.batch), cap(rd.buf))
	}
}

// readyParts is parts that says how much it has at hand (Ready), and counts its reads.
type readyParts struct {
	parts
	reads int
}

func (r *readyParts) Ready() int {
	if len(r.p) == 0 {
		return 0
	}
	return len(r.p[0])
}

func (r *readyParts) Read(b []byte) (int, error) {
	r.reads++
	return r.parts.Read(b)
}

// A reader that says how many bytes it has at hand gets a buffer for all of them at once: a
// large command is parsed once more, not once per doubling of the buffer.
func TestPatchReadyGrowsOnce(t *testing.T) {
	keys := make([]string, 100000)
	for i := range keys {
		keys[i] = "key:" + strings.Repeat("k", i%7)
	}
	big := resp(append([]string{"DEL"}, keys...)...)
	src := &readyParts{parts: parts{p: []string{big}}}
	rd := NewReader(src)
	cmds := readBatch(t, rd)
	if len(cmds) != 1 || string(cmds[0].Raw) != big || len(cmds[0].Args) != len(keys)+1 {
		t.Fatalf("got %d commands", len(cmds))
	}
	for i, a := range cmds[0].Args[1:] {
		if string(a) != keys[i] {
			t.Fatalf("arg %d: %q, want %q", i+1, a, keys[i])
		}
	}
	if src.reads > 2 {
		t.Fatalf("%d reads for one command of %d bytes; want 2 (a buffer, then the rest)", src.reads, len(big))
	}
}

// batchParts is readyParts that also splits its commands itself (ReadBatch), one string a batch,
// as sessionproxy's resp.Conn does.
type batchParts struct {
	readyParts
	batches int
}

func (r *batchParts) ReadBatch(cmds []Command, args [][]byte) ([]Command, [][]byte, error) {
	r.batches++
	if len(r.p) == 0 {
		return cmds, args, io.EOF
	}
	sub := NewReader(strings.NewReader(r.p[0]))
	r.p = r.p[1:]
	got, err := sub.ReadCommands()
	for _, c := range got {
		from := len(args)
		args = append(args, c.Args...)
		cmds = append(cmds, Command{Raw: c.Raw, Args: args[from:len(args):len(args)]})
	}
	return cmds, args, err
}

// A reader with ReadBatch hands over its commands as they are, without a buffer of this
// reader's; once detached, the reader reads the rest of the byte stream itself.
func TestPatchReadBatch(t *testing.T) {
	src := &batchParts{readyParts: readyParts{parts: parts{p: []string{
		resp("SET", "a", "1") + resp("GET", "a"), resp("SUBSCRIBE", "c"), resp("PING"),
	}}}}
	rd := NewReader(src)
	if rd.buf != nil {
		t.Fatal("a buffer was made for a reader that splits its own commands")
	}
	if cmds := readBatch(t, rd); len(cmds) != 2 || argsOf(cmds[0]) != "SET a 1" || argsOf(cmds[1]) != "GET a" {
		t.Fatalf("first batch: %d commands", len(cmds))
	}
	if cmds := readBatch(t, rd); len(cmds) != 1 || argsOf(cmds[0]) != "SUBSCRIBE c" {
		t.Fatalf("second batch: %d commands", len(cmds))
	}
	rd.detach()
	if cmds := readBatch(t, rd); len(cmds) != 1 || argsOf(cmds[0]) != "PING" {
		t.Fatalf("after detach: %d commands", len(cmds))
	}
	if src.batches != 2 || src.reads != 1 {
		t.Fatalf("%d ReadBatch calls and %d Reads, want 2 and 1", src.batches, src.reads)
	}
}
