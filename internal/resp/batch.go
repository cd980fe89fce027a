package resp

import (
	"errors"

	"github.com/tidwall/redcon"
)

// This file hands a client's whole commands to redcon already split into arguments
// (Conn.ReadBatch), so that the request is parsed once, by the normalizer, not a second time
// by redcon's reader: at a pipeline of 16 SETs that second parse (and the copy into redcon's
// buffer before it) was half the reading cost, about 40 ns a command.

// cmdRec is where one whole command lies in the normalizer's output, and its arguments in
// marks.mk[mkFrom:mkTo] (start and end of each argument's data, two entries an argument).
// A command that is not ok (an inline one, one whose bytes moved, one started before the
// marks were kept) is parsed from its canonical bytes instead.
type cmdRec struct {
	start, end   int
	mkFrom, mkTo int
	ok           bool
}

// marks is the normalizer's record of what it emitted, kept while track is set.
type marks struct {
	track bool
	recs  []cmdRec // whole commands not handed on yet, from recs[head] on
	head  int
	mk    []int
	cur   cmdRec // the command being emitted
}

// begin starts the record of a command whose canonical form starts at dst offset at.
func (m *marks) begin(at int) {
	m.cur = cmdRec{start: at, mkFrom: len(m.mk), ok: true}
}

// end completes the current command's record: its canonical form ends at dst offset at.
func (m *marks) end(at int) {
	m.cur.end, m.cur.mkTo = at, len(m.mk)
	m.recs = append(m.recs, m.cur)
}

// shift follows the output buffer when its first off bytes are dropped (every whole command
// having been handed on): only the command still being emitted has marks left.
func (m *marks) shift(off int) {
	m.cur.start -= off
	for i := m.cur.mkFrom; i < len(m.mk); i++ {
		m.mk[i] -= off
	}
}

// moved says that the bytes of the command being emitted left the output buffer (Conn.held):
// its marks no longer point at them.
func (m *marks) moved() {
	m.cur.ok = false
	m.mk = m.mk[:min(m.cur.mkFrom, len(m.mk))]
}

// handed drops the records of the commands handed on. The marks of a multibulk command still
// being emitted move to the front; anything else leaves none (an inline command or a "*<n>"
// line in progress has none yet).
func (n *Normalizer) handed() {
	m := &n.marks
	m.recs, m.head = m.recs[:0], 0
	switch k := m.cur.mkFrom; {
	case n.state < stBulkLen || n.state > stBulkCRLF || !m.cur.ok || k > len(m.mk):
		m.mk, m.cur.mkFrom = m.mk[:0], 0
	case k > 0:
		m.mk = m.mk[:copy(m.mk, m.mk[k:])]
		m.cur.mkFrom = 0
	}
	if cap(m.mk) > maxKeptMarks {
		m.mk = append([]int(nil), m.mk...) // one command of many arguments once
	}
	if cap(m.recs) > maxKeptRecs {
		m.recs = nil
	}
}

// stop ends the record keeping (the byte-stream Read took over).
func (m *marks) stop() {
	m.track, m.recs, m.mk = false, nil, nil
}

// Bounds on the marks kept between batches.
const (
	maxKeptMarks = 8 << 10
	maxKeptRecs  = 1 << 10
)

// errFraming is a canonical command the normalizer emitted but that does not parse: a bug,
// answered by closing the connection rather than by a panic.
var errFraming = errors.New("resp: internal framing error")

var errBatchAfterRead = errors.New("resp: ReadBatch after Read")

// ReadBatch appends the client's whole commands at hand to cmds, reading and normalizing once
// if there are none, with their arguments carved into args (both backings reused by the
// caller); each command's Raw is its canonical form. The commands and their arguments point
// into the connection's buffers and are valid until the next ReadBatch or Read. It reports
// errors as Read does, after the whole commands that came before them. Read may follow
// ReadBatch (the byte stream goes on at a command boundary, e.g. once redcon detached the
// connection), not the other way round.
func (c *Conn) ReadBatch(cmds []redcon.Command, args [][]byte) ([]redcon.Command, [][]byte, error) {
	if !c.n.track {
		return cmds, args, errBatchAfterRead
	}
	for {
		if c.heldWhole {
			return c.handHeld(cmds, args)
		}
		if c.off < c.ready {
			return c.hand(cmds, args)
		}
		if err := c.fill(true); err != nil {
			return cmds, args, err
		}
	}
}

// maxBatch is about the most command bytes one ReadBatch hands on (at least one command), as
// redcon's own 4 KiB buffer did: the proxy holds a batch's replies until the batch is done, so
// a client pipelining large replies holds about a quarter as much as with a whole 16 KiB read
// a batch (bench/bounds "pipeline": 49 MB against 137 MB peak RSS).
const maxBatch = 4 << 10

// hand carves the commands of out[off:ready], up to about maxBatch bytes of them, from the
// marks where they fit.
func (c *Conn) hand(cmds []redcon.Command, args [][]byte) ([]redcon.Command, [][]byte, error) {
	b, m := c.out, &c.n.marks
	pos, ri := c.off, m.head
	for pos < c.ready && pos-c.off < maxBatch {
		for ri < len(m.recs) && m.recs[ri].start < pos {
			ri++
		}
		if ri < len(m.recs) && m.recs[ri].start == pos && m.recs[ri].ok && m.recs[ri].end <= c.ready {
			r := m.recs[ri]
			ri++
			from := len(args)
			for k := r.mkFrom; k+1 < r.mkTo; k += 2 {
				args = append(args, b[m.mk[k]:m.mk[k+1]:m.mk[k+1]])
			}
			cmds = append(cmds, redcon.Command{Raw: b[pos:r.end:r.end], Args: args[from:len(args):len(args)]})
			pos = r.end
			continue
		}
		c.parsed++
		var err error
		if cmds, args, pos, err = carve(cmds, args, b[:c.ready], pos); err != nil {
			if c.rerr == nil {
				c.rerr = err // after the commands before it, like a read error
			}
			pos = c.ready
			break
		}
	}
	c.off, m.head = pos, ri
	if pos == c.ready {
		c.n.handed()
	}
	return cmds, args, nil
}

// handHeld hands on a large command held in chunks (Conn.held) and the whole commands after it,
// gathered into one buffer of their own and parsed: the command's bytes are in several
// buffers, where no marks point.
func (c *Conn) handHeld(cmds []redcon.Command, args [][]byte) ([]redcon.Command, [][]byte, error) {
	b := make([]byte, 0, c.Ready())
	b = append(b, c.held[0][c.heldOff:]...)
	for _, h := range c.held[1:] {
		b = append(b, h...)
	}
	b = append(b, c.out[c.off:c.ready]...)
	c.held, c.heldOff, c.heldWhole, c.heldCap = nil, 0, false, 0
	if c.budget != nil {
		c.account() // handed on: no longer held
	}
	c.off = c.ready
	c.n.handed()
	var err error
	for pos := 0; pos < len(b) && err == nil; c.parsed++ {
		cmds, args, pos, err = carve(cmds, args, b, pos)
	}
	if err != nil && c.rerr == nil {
		c.rerr = err
	}
	return cmds, args, nil
}

// carve parses the canonical command at b[pos:] (as the normalizer emits it) into cmds and
// args and returns where it ends.
func carve(cmds []redcon.Command, args [][]byte, b []byte, pos int) ([]redcon.Command, [][]byte, int, error) {
	n, i, ok := canonNum(b, pos, '*')
	if !ok {
		return cmds, args, len(b), errFraming
	}
	from := len(args)
	for range n {
		var l int
		if l, i, ok = canonNum(b, i, '$'); !ok || l > len(b)-i-2 {
			return cmds, args[:from], len(b), errFraming
		}
		args = append(args, b[i:i+l:i+l])
		i += l + 2
	}
	cmds = append(cmds, redcon.Command{Raw: b[pos:i:i], Args: args[from:len(args):len(args)]})
	return cmds, args, i, nil
}

// canonNum reads "<lead><digits>\r\n" at b[i:] and returns the number and the index after the
// line.
func canonNum(b []byte, i int, lead byte) (int, int, bool) {
	if i >= len(b) || b[i] != lead {
		return 0, 0, false
	}
	v := 0
	for i++; i < len(b) && b[i] != '\r'; i++ {
		d := b[i] - '0'
		if d > 9 || v > (1<<62)/10 {
			return 0, 0, false
		}
		v = v*10 + int(d)
	}
	if i+1 >= len(b) || b[i+1] != '\n' {
		return 0, 0, false
	}
	return v, i + 2, true
}
