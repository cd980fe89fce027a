package resp

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/redcon"
)

// recConn returns scripted reads and records writes.
type recConn struct {
	net.Conn
	reads   []scriptRead
	written bytes.Buffer
}

func (s *recConn) Read(p []byte) (int, error) {
	if len(s.reads) == 0 {
		return 0, io.EOF
	}
	r := s.reads[0]
	n := copy(p, r.data)
	if n < len(r.data) {
		s.reads[0].data = r.data[n:]
		return n, nil
	}
	s.reads = s.reads[1:]
	return n, r.err
}
func (s *recConn) Write(b []byte) (int, error) { return s.written.Write(b) }
func (s *recConn) Close() error                { return nil }

type result struct {
	cmds    []string // Args joined, one per command
	raws    []byte
	err     string
	written string
	parsed  int
	empty   int // ReadBatch calls that returned no commands and no error
}

func encArgs(cmd redcon.Command) string {
	var b strings.Builder
	for i, a := range cmd.Args {
		if i > 0 {
			b.WriteByte('|')
		}
		fmt.Fprintf(&b, "%q", a)
	}
	return b.String()
}

func checkCmd(t *testing.T, cmd redcon.Command) {
	t.Helper()
	enc := redcon.AppendArray(nil, len(cmd.Args))
	for _, a := range cmd.Args {
		enc = redcon.AppendBulk(enc, a)
	}
	if !bytes.Equal(enc, cmd.Raw) {
		t.Fatalf("Args %q do not match Raw %q", cmd.Args, cmd.Raw)
	}
}

// runPath runs reads through Conn with ReadBatch (batch) or through the byte stream under
// redcon's parser; unauth: the client is unauthenticated until it sends AUTH.
func runPath(t *testing.T, reads []scriptRead, batch, unauth bool, large, chunk int, budget *Budget) result {
	rc := &recConn{reads: append([]scriptRead(nil), reads...)}
	c := NewConn(rc, DefaultLimits())
	if large > 0 {
		c.large, c.chunk = large, chunk
	}
	if budget != nil {
		c.SetBudget(budget)
	}
	authed := false
	if unauth {
		c.Unauthenticated = func() bool { return !authed }
	}
	var res result
	handle := func(cmd redcon.Command) {
		checkCmd(t, cmd)
		res.cmds = append(res.cmds, encArgs(cmd))
		res.raws = append(res.raws, cmd.Raw...)
		if len(cmd.Args) > 0 && strings.EqualFold(string(cmd.Args[0]), "AUTH") {
			authed = true
		}
	}
	if batch {
		var cmds []redcon.Command
		var args [][]byte
		var prev []redcon.Command
		var prevSnap []string
		for i := 0; i < 10000; i++ {
			var err error
			// the previous batch must still be intact right up to the next call
			for k, p := range prev {
				if encArgs(p) != prevSnap[k] {
					t.Fatalf("previous command changed before the next ReadBatch")
				}
			}
			cmds, args, err = c.ReadBatch(cmds[:0], args[:0])
			if err != nil {
				res.err = err.Error()
				break
			}
			if len(cmds) == 0 {
				res.empty++
			}
			prev, prevSnap = cmds, nil
			for _, cmd := range cmds {
				handle(cmd)
				prevSnap = append(prevSnap, encArgs(cmd))
			}
		}
	} else {
		rd := redcon.NewReader(readOnlyConn{c})
		for i := 0; i < 10000; i++ {
			b, err := rd.ReadCommands()
			if err != nil {
				res.err = err.Error()
				break
			}
			for _, cmd := range b {
				handle(cmd)
			}
		}
	}
	res.written = rc.written.String()
	res.parsed = c.parsed
	c.Close()
	if budget != nil && budget.Used() != 0 {
		t.Fatalf("budget %d after Close", budget.Used())
	}
	return res
}

func compare(t *testing.T, name string, reads []scriptRead, unauth bool, large, chunk int) result {
	t.Helper()
	ba, bb := new(Budget), new(Budget)
	ba.SetLimit(budgetLimit)
	bb.SetLimit(budgetLimit)
	a := runPath(t, reads, true, unauth, large, chunk, ba)
	b := runPath(t, reads, false, unauth, large, chunk, bb)
	if fmt.Sprint(a.cmds) != fmt.Sprint(b.cmds) || a.err != b.err || a.written != b.written {
		var in []byte
		for _, r := range reads {
			in = append(in, r.data...)
		}
		t.Fatalf("%s: differ\ninput %q\nbatch: %q err %q wrote %q\nbytes: %q err %q wrote %q",
			name, in, a.cmds, a.err, a.written, b.cmds, b.err, b.written)
	}
	return a
}

func splitReads(in []byte, r *rand.Rand, maxPiece int) []scriptRead {
	var out []scriptRead
	for i := 0; i < len(in); {
		n := min(len(in)-i, 1+r.Intn(maxPiece))
		out = append(out, scriptRead{data: string(in[i : i+n])})
		i += n
	}
	return out
}

func randCmd(r *rand.Rand, big bool) (string, bool) {
	arg := func() string {
		n := r.Intn(6)
		if big && r.Intn(4) == 0 {
			n = 50 + r.Intn(400)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = "ab\r\n*$0 "[r.Intn(8)]
		}
		return string(b)
	}
	switch r.Intn(10) {
	case 0:
		return "GET k" + fmt.Sprint(r.Intn(10)) + "\r\n", true // inline
	case 1:
		return "*0\r\n", false
	case 2: // non-canonical framing
		return "*2\r\n$3\rxGETab$1\r\nk\r\n", false
	case 3:
		return "*1\r\n$" + "4\r\nAUTH\r\n", false
	default:
		n := 1 + r.Intn(5)
		args := make([]string, n)
		for i := range args {
			args[i] = arg()
		}
		return mbulk(args...), false
	}
}

var budgetLimit int64

var badTails = []string{"*1\r\n$+1\r\n", "*x\r\n", "*1\r\n!\r\n", "\"unbalanced\r\n", "*1\r\n$1\r\na"}

func TestReadBatchDifferential(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	errs := map[string]int{}
	parsedTotal := 0
	defer func() { t.Logf("errors: %v; parsed without marks: %d", errs, parsedTotal) }()
	for iter := 0; iter < 20000; iter++ {
		var in []byte
		inline := 0
		big := iter%3 == 0
		for k := 1 + r.Intn(30); k > 0; k-- {
			s, isInline := randCmd(r, big)
			if isInline {
				inline++
			}
			in = append(in, s...)
		}
		if r.Intn(3) == 0 {
			in = append(in, badTails[r.Intn(len(badTails))]...)
		}
		unauth := r.Intn(3) == 0
		large, chunk := 0, 0
		if big {
			large, chunk = 64, 128
		}
		maxPiece := []int{1, 3, 17, 100, 5000}[r.Intn(5)]
		reads := splitReads(in, r, maxPiece)
		if r.Intn(4) == 0 && len(reads) > 0 { // a read error with the last data
			reads[len(reads)-1].err = timeoutError{}
		}
		budgetLimit = 0
		if big && r.Intn(2) == 0 {
			budgetLimit = int64(200 + r.Intn(2000))
		}
		res := compare(t, fmt.Sprint(iter), reads, unauth, large, chunk)
		errs[res.err]++
		parsedTotal += res.parsed
		if !big && res.parsed > inline {
			t.Fatalf("iter %d: %d commands parsed without marks, %d inline\n%q", iter, res.parsed, inline, in)
		}
		if res.empty > 0 {
			t.Fatalf("iter %d: %d empty batches", iter, res.empty)
		}
	}
}

// batchListener serves resp.Conns, with ReadBatch or (hide) without.
type batchListener struct {
	net.Listener
	hide bool
}

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := NewConn(c, DefaultLimits())
	if l.hide {
		return readOnlyConn{rc}, nil
	}
	return rc, nil
}

// readOnlyConn is a Conn whose ReadBatch redcon does not see (a method of another type
// shadows it): redcon reads its byte stream.
type readOnlyConn struct{ *Conn }

func (readOnlyConn) ReadBatch() {}

// TestReadBatchDetachKeepsCommands: commands handed to a handler that detaches the connection
// stay valid (PATCH.md) while the detached reader reads on, with ReadBatch as without: they
// point into resp.Conn's output buffer, which the byte stream must not write over.
func TestReadBatchDetachKeepsCommands(t *testing.T) {
	for _, hide := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		result := make(chan string, 1)
		srv := redcon.NewServer("", func(conn redcon.Conn, cmd redcon.Command) {
			before := encArgs(cmd)
			dc := conn.Detach()
			go func() {
				defer dc.Close()
				for range 2 {
					if _, err := dc.ReadCommand(); err != nil {
						result <- "read: " + err.Error()
						return
					}
				}
				if after := encArgs(cmd); after != before {
					result <- before + " -> " + after
					return
				}
				result <- ""
			}()
		}, nil, nil)
		go func() { _ = srv.Serve(batchListener{ln, hide}) }()
		cl, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = cl.Write([]byte(mbulk("SUBSCRIBE", "channel-one")))
		time.Sleep(50 * time.Millisecond)
		_, _ = cl.Write([]byte(mbulk("PING", "zzzzzzzzzzzzzzzzzzzzzzzz") + mbulk("PING", "yyyyyyyyyyyyyyyyyyyyyy")))
		select {
		case r := <-result:
			if r != "" {
				t.Errorf("hide ReadBatch=%v: a command handed before Detach changed after the detached reads: %s", hide, r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("timeout")
		}
		cl.Close()
		srv.Close()
	}
}

// TestReadBatchErrorAfterWhole: whole commands, then a protocol error in the same read.
func TestReadBatchErrorAfterWhole(t *testing.T) {
	for _, in := range []string{
		mbulk("A") + mbulk("B") + "*1\r\n$+1\r\n",
		"PING\r\n" + mbulk("B") + "*x\r\n",
		mbulk("SET", "k", strings.Repeat("v", 200)) + mbulk("B") + "*1\r\n!\r\n",
	} {
		for _, unauth := range []bool{false, true} {
			compare(t, in, []scriptRead{{data: in}}, unauth, 64, 128)
			compare(t, in, []scriptRead{{data: in, err: io.ErrUnexpectedEOF}}, unauth, 0, 0)
		}
	}
}

// TestReadOnlyHidesReadBatch: redcon reads readOnlyConn as a byte stream, so the "byte stream"
// half of FuzzConnChunks runs.
func TestReadOnlyHidesReadBatch(t *testing.T) {
	c := NewConn(&recConn{reads: []scriptRead{{data: mbulk("PING")}}}, DefaultLimits())
	rd := redcon.NewReader(readOnlyConn{c})
	if _, err := rd.ReadCommands(); err != nil {
		t.Fatal(err)
	}
	if c.n.track {
		t.Errorf("readOnlyConn: redcon used ReadBatch (marks still tracked), not Read")
	}
}

// TestReadBatchMarksBounded: reads that each end in the first bytes of the next command (a
// "*<n>" line, an inline command) after many whole ones: once a read is handed on, the marks of
// its commands are dropped (they once piled up, all of them, read after read).
func TestReadBatchMarksBounded(t *testing.T) {
	for _, tc := range []struct {
		name, head, cmd, tail string
		reads, size           int
	}{
		{"count-line", "1\r\n$1\r\na\r\n", "*1\r\n$1\r\na\r\n", "PING\r\n*", 2000, 1100},
		{"inline", "ING\r\n", "*1\r\n$0\r\n\r\n", "PING\r\nP", 400, 16<<10 - 20},
	} {
		var reads []scriptRead
		for i := range tc.reads {
			var b strings.Builder
			if i > 0 {
				b.WriteString(tc.head)
			}
			for b.Len() < tc.size {
				b.WriteString(tc.cmd)
			}
			b.WriteString(tc.tail)
			reads = append(reads, scriptRead{data: b.String()})
		}
		c := NewConn(&recConn{reads: reads}, DefaultLimits())
		var cmds []redcon.Command
		var args [][]byte
		for {
			var err error
			if cmds, args, err = c.ReadBatch(cmds[:0], args[:0]); err != nil {
				break
			}
			for _, cmd := range cmds {
				checkCmd(t, cmd)
			}
			if c.off == c.ready && len(c.n.mk) > 2 {
				t.Fatalf("%s: %d marks kept once a read was handed on, want none", tc.name, len(c.n.mk))
			}
		}
	}
}

// TestReadBatchSize: one read of many commands is handed on in batches of about maxBatch bytes
// (at least one command each), in order, as redcon's own 4 KiB buffer did.
func TestReadBatchSize(t *testing.T) {
	var in strings.Builder
	for i := range 1000 {
		in.WriteString(mbulk("GET", fmt.Sprintf("key:%06d", i)))
	}
	in.WriteString(mbulk("SET", "k", strings.Repeat("v", 3*maxBatch)))
	in.WriteString(mbulk("GET", "last"))
	c := NewConn(&recConn{reads: []scriptRead{{data: in.String()}}}, DefaultLimits())
	var got []byte
	batches := 0
	for {
		cmds, _, err := c.ReadBatch(nil, nil)
		if err != nil {
			break
		}
		batches++
		size := 0
		for _, cmd := range cmds {
			checkCmd(t, cmd)
			size += len(cmd.Raw)
			got = append(got, cmd.Raw...)
		}
		if len(cmds) > 1 && size-len(cmds[len(cmds)-1].Raw) >= maxBatch {
			t.Fatalf("batch of %d commands, %d bytes", len(cmds), size)
		}
	}
	if string(got) != in.String() {
		t.Fatalf("commands lost or reordered: %d of %d bytes", len(got), in.Len())
	}
	if min := in.Len() / (maxBatch + 64); batches < min {
		t.Fatalf("%d batches for %d bytes, want at least %d", batches, in.Len(), min)
	}
}
