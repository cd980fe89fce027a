package proxy

import (
	"bytes"
	"strconv"
	"sync"
	"time"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// slowLog records shared-path round trips to Redis that took at least a threshold (PROXY
// SLOWLOG), as Redis' SLOWLOG records slow commands: the time from the proxy queueing a
// client's commands on a shared connection to their last reply, so it also counts waiting
// behind other clients' commands there (Redis' own SLOWLOG has the execution alone). Only slow
// requests take the lock.
type slowLog struct {
	threshold time.Duration // 0: off
	max       int

	mu      sync.Mutex
	nextID  int64
	entries []slowEntry // a ring of at most max: entries[head] is the oldest once it is full
	head    int
}

type slowEntry struct {
	id         int64
	at         time.Time
	dur        time.Duration
	args       [][]byte
	addr, name string
}

// Redis' SLOWLOG bounds on what it keeps of a command.
const (
	slowMaxArgs   = 32
	slowMaxArgLen = 128
)

// note records cmds of client c if their round trip took d, at or past the threshold.
func (l *slowLog) note(c *client, cmds []redcon.Command, d time.Duration) {
	if l.threshold <= 0 || d < l.threshold || len(cmds) == 0 {
		return
	}
	e := slowEntry{at: time.Now(), dur: d, addr: c.info.addr, name: c.name}
	args := cmds[0].Args
	if len(args) == 0 {
		// A command the proxy made (a session write's script call): as sent to Redis.
		args = bulkArgs(cmds[0].Raw)
	}
	for i, a := range args {
		if i == slowMaxArgs-1 && len(args) > slowMaxArgs {
			e.args = append(e.args, []byte("... ("+strconv.Itoa(len(args)-i)+" more arguments)"))
			break
		}
		if len(a) > slowMaxArgLen {
			a = append(a[:slowMaxArgLen:slowMaxArgLen], "... ("+strconv.Itoa(len(a)-slowMaxArgLen)+" more bytes)"...)
		} else {
			a = append([]byte(nil), a...)
		}
		e.args = append(e.args, a)
	}
	if len(cmds) > 1 {
		e.args = append(e.args, []byte("... ("+strconv.Itoa(len(cmds)-1)+" more commands in the batch)"))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e.id = l.nextID
	l.nextID++
	if len(l.entries) < l.max {
		l.entries = append(l.entries, e)
		return
	}
	l.entries[l.head] = e
	l.head = (l.head + 1) % len(l.entries)
}

// newest returns the i-th newest entry (0: the newest). Called with mu held.
func (l *slowLog) newest(i int) slowEntry {
	return l.entries[(l.head+len(l.entries)-1-i)%len(l.entries)]
}

// bulkArgs splits a RESP array of bulk strings (a command as sent) into its arguments.
func bulkArgs(raw []byte) [][]byte {
	elems, ok := resp.SplitArray(nil, raw)
	if !ok {
		return nil
	}
	for i, e := range elems {
		if nl := bytes.IndexByte(e, '\n'); e[0] == '$' && nl > 0 && len(e) >= nl+3 {
			elems[i] = e[nl+1 : len(e)-2]
		}
	}
	return elems
}

// cmdSlowlog answers PROXY SLOWLOG GET [count] | LEN | RESET in Redis' SLOWLOG formats.
func cmdSlowlog(c *client, args [][]byte) {
	l := &c.s.slow
	switch {
	case len(args) >= 3 && len(args) <= 4 && equalFold(args[2], "GET"):
		n := 10
		if len(args) == 4 {
			v, err := strconv.Atoi(string(args[3]))
			if err != nil || v < -1 {
				c.write([]byte("-ERR count should be greater than or equal to -1\r\n"))
				return
			}
			n = v
		}
		l.mu.Lock()
		if n == -1 || n > len(l.entries) {
			n = len(l.entries)
		}
		out := redcon.AppendArray(nil, n)
		for i := range n { // newest first, as Redis
			e := l.newest(i)
			out = redcon.AppendArray(out, 6)
			out = redcon.AppendInt(out, e.id)
			out = redcon.AppendInt(out, e.at.Unix())
			out = redcon.AppendInt(out, e.dur.Microseconds())
			out = redcon.AppendArray(out, len(e.args))
			for _, a := range e.args {
				out = redcon.AppendBulk(out, a)
			}
			out = redcon.AppendBulkString(out, e.addr)
			out = redcon.AppendBulkString(out, e.name)
		}
		l.mu.Unlock()
		c.write(out)
	case len(args) == 3 && equalFold(args[2], "LEN"):
		l.mu.Lock()
		n := len(l.entries)
		l.mu.Unlock()
		c.write(redcon.AppendInt(nil, int64(n)))
	case len(args) == 3 && equalFold(args[2], "RESET"):
		l.mu.Lock()
		l.entries, l.head = l.entries[:0], 0
		l.mu.Unlock()
		c.write([]byte("+OK\r\n"))
	default:
		c.write(redcon.AppendError(nil, "ERR unknown subcommand or wrong number of arguments for 'proxy|slowlog'. Try PROXY SLOWLOG GET [count], PROXY SLOWLOG LEN, PROXY SLOWLOG RESET."))
	}
}
