package proxy

// Index acceptance tests: every command the proxy intercepts, run straight against one
// redis-server and through the proxy in front of another, in three modes (plain, inside
// MULTI/EXEC, after HELLO 3). For each case the reply bytes must be identical, and afterwards
// the index keys, the owner map and the deadline ledger behind the proxy — read straight from
// its redis-server — must be exactly what the case expects. The data keys of both servers
// must match too, and, where nothing was changed behind the proxy's back, the bookkeeping must
// equal what the data itself implies (an independent oracle, ixDerive).
//
// Two servers, not one run after the other as in differential_test.go: the proxy's
// bookkeeping must be inspected after the run, and only small listpack/intset-encoded
// collections are compared, whose order does not depend on a server's hash seed.
//
// The cases are testdata/index/*.txt (format: ixFormat); the 100-command pipeline and the
// NOSCRIPT cases are built in Go below.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessionproxy/sessionproxy/internal/promtest"
	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/resp"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// ixFormat documents the corpus format; ixParse implements it.
const ixFormat = `
=== name             starts a case, named <file>/<name>; names are unique
setup CMD args...    run through the proxy, and straight on the direct server; replies compared
behind CMD args...   run straight on both redis-servers (DB 0), behind the proxy's back
run CMD args...      a command under test: its reply bytes must equal direct Redis' (all the
                     runs of a case go inside one MULTI/EXEC in the multi mode)
reply "RESP"         (Go-quoted) the expected reply of the run before it, for the proxy's own
                     commands, which direct Redis does not know; a case with replies has one
                     per run, and the direct server runs its "direct" lines instead of the runs
direct CMD args...   what makes the direct server's data match after a case with replies
want [@db] KEY {m[=v],...}
                     an index or bookkeeping key expected after the runs (DB 0 unless @db).
                     KEY: an index key, "owners" (the owner map) or "ledger" (the deadline
                     ledger). v: a uid or score; "inf"; or ~N: a deadline N seconds after the
                     runs (within ixTolerance). Every other index/bookkeeping key of DBs
                     0-3 must be absent. Go escapes (\xHH) work in KEY, m and v.
want nothing         no index or bookkeeping key at all
bug TEXT             the case shows a known proxy bug: it stays and fails until fixed
# ...                comment
Arguments are words split at spaces, or Go-quoted strings. In arguments, {now+N} is the unix
time N seconds from the start of the case, {pnow+N} the same in ms, {dump:NAME} a DUMP
payload made at test start (ixDumps).
`

const (
	ixLanes     = 3    // direct + proxied redis-server pairs running cases in parallel
	ixDBs       = 4    // DBs whose state is read (the corpus uses 0-3)
	ixTolerance = 3000 // ms: deadlines are compared with the clock within this
	ixMinCases  = 430  // the corpus must not silently shrink below this
)

type ixStep struct {
	kind  string // setup, behind, run, direct
	args  []string
	reply string // run: the expected reply, when the case has replies
	what  string // file:line: text
}

type ixCase struct {
	name, origin string
	steps        []ixStep // setup and behind, in order
	runs         []ixStep
	direct       []ixStep
	replies      bool
	want         ixState
	bug          string
}

// ixState is the content of index and bookkeeping keys: "<db> <key>" -> member -> value (""
// for set members; score, or a hash value).
type ixState map[string]map[string]string

// ixDumps are the DUMP payloads {dump:NAME} stands for: the value created by the commands.
var ixDumps = map[string][][]string{
	"hash7":  {{"HSET", "k", "userid", "7", "name", "x"}},
	"json8":  {{"SET", "k", `{"passport":{"user":"8"}}`}},
	"zhash9": {{"HSET", "k", "uid", "9"}},
}

// TestIndexCmds runs every corpus case in the three modes, in parallel on ixLanes lanes.
func TestIndexCmds(t *testing.T) {
	t.Parallel()
	cases := ixLoadCorpus(t)
	if len(cases) < ixMinCases {
		t.Fatalf("index corpus has %d cases, want at least %d", len(cases), ixMinCases)
	}
	lanes := ixStartLanes(t, ixLanes)
	dumps := ixMakeDumps(t, lanes)
	t.Logf("index corpus: %d cases x 3 modes", len(cases))
	for _, mode := range []string{"plain", "multi", "resp3"} {
		t.Run(mode, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					l := <-lanes
					defer func() { lanes <- l }()
					l.check(t, c, mode, dumps)
				})
			}
		})
	}
}

// ---- corpus ----

func ixLoadCorpus(t *testing.T) []*ixCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "index", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no index corpus files: %v", err)
	}
	sort.Strings(files)
	var all []*ixCase
	seen := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := ixParse(filepath.Base(f), string(data))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if seen[c.name] {
				t.Fatalf("duplicate case %s (%s)", c.name, c.origin)
			}
			seen[c.name] = true
		}
		all = append(all, cs...)
	}
	return all
}

var ixWantLine = regexp.MustCompile(`^(?:@(\d+) )?(\S+) \{(.*)\}$`)

func ixParse(file, data string) ([]*ixCase, error) {
	prefix := strings.TrimSuffix(file, ".txt") + "/"
	var cases []*ixCase
	var cur *ixCase
	finish := func() error {
		if cur == nil {
			return nil
		}
		switch {
		case len(cur.runs) == 0:
			return fmt.Errorf("%s: case %s has no run line", cur.origin, cur.name)
		case cur.want == nil:
			return fmt.Errorf("%s: case %s has no want line", cur.origin, cur.name)
		case !cur.replies && len(cur.direct) > 0:
			return fmt.Errorf("%s: case %s has direct lines but no replies", cur.origin, cur.name)
		}
		for _, r := range cur.runs {
			if cur.replies && r.reply == "" {
				return fmt.Errorf("%s: case %s: every run needs a reply once one has", cur.origin, cur.name)
			}
		}
		return nil
	}
	for i, line := range strings.Split(data, "\n") {
		at := fmt.Sprintf("%s:%d", file, i+1)
		text := strings.TrimSpace(line)
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		kw, rest, _ := strings.Cut(text, " ")
		rest = strings.TrimSpace(rest)
		if kw == "===" {
			if err := finish(); err != nil {
				return nil, err
			}
			cur = &ixCase{name: prefix + rest, origin: at}
			cases = append(cases, cur)
			continue
		}
		if cur == nil {
			return nil, fmt.Errorf("%s: line outside a case", at)
		}
		switch kw {
		case "setup", "behind", "run", "direct":
			a, err := ixSplit(rest)
			if err != nil || len(a) == 0 {
				return nil, fmt.Errorf("%s: bad command %q: %v", at, rest, err)
			}
			st := ixStep{kind: kw, args: a, what: at + ": " + text}
			switch kw {
			case "run":
				cur.runs = append(cur.runs, st)
			case "direct":
				cur.direct = append(cur.direct, st)
			default:
				if len(cur.runs) > 0 {
					return nil, fmt.Errorf("%s: %s after a run line", at, kw)
				}
				cur.steps = append(cur.steps, st)
			}
		case "reply":
			r, err := strconv.Unquote(rest)
			if err != nil || len(cur.runs) == 0 || cur.runs[len(cur.runs)-1].reply != "" {
				return nil, fmt.Errorf("%s: reply needs a Go-quoted string after a run line", at)
			}
			cur.runs[len(cur.runs)-1].reply = r
			cur.replies = true
		case "want":
			if cur.want == nil {
				cur.want = ixState{}
			}
			if rest == "nothing" {
				continue
			}
			m := ixWantLine.FindStringSubmatch(rest)
			if m == nil {
				return nil, fmt.Errorf("%s: want line must be [@db] KEY {m[=v],...}", at)
			}
			db := 0
			if m[1] != "" {
				db, _ = strconv.Atoi(m[1])
			}
			key, err := ixUnescape(m[2])
			if err != nil {
				return nil, fmt.Errorf("%s: %v", at, err)
			}
			switch key {
			case "owners":
				key = rewrite.DefaultPrefix + "owners"
			case "ledger":
				key = rewrite.DefaultPrefix + "deadlines"
			}
			members := map[string]string{}
			for _, it := range strings.Split(m[3], ",") {
				mem, v, _ := strings.Cut(strings.TrimSpace(it), "=")
				var err1, err2 error
				mem, err1 = ixUnescape(mem)
				v, err2 = ixUnescape(v)
				if mem == "" || err1 != nil || err2 != nil {
					return nil, fmt.Errorf("%s: bad member %q", at, it)
				}
				members[mem] = v
			}
			cur.want[fmt.Sprintf("%d %s", db, key)] = members
		case "bug":
			cur.bug = rest
		default:
			return nil, fmt.Errorf("%s: unknown line %q", at, kw)
		}
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return cases, nil
}

// ixUnescape decodes Go escapes (\xHH, \r...) in a want line's key, member or value.
func ixUnescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	return strconv.Unquote(`"` + s + `"`)
}

// ixSplit splits words at spaces; a word starting with a double quote is a Go-quoted string.
func ixSplit(s string) ([]string, error) {
	var out []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, nil
		}
		if s[0] == '"' {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, err
			}
			v, _ := strconv.Unquote(q)
			out = append(out, v)
			s = s[len(q):]
			if s != "" && s[0] != ' ' && s[0] != '\t' {
				return nil, fmt.Errorf("quoted word followed by %q", s)
			}
			continue
		}
		w, rest, _ := strings.Cut(s, " ")
		out = append(out, w)
		s = rest
	}
}

var ixPlaceholder = regexp.MustCompile(`\{(now|pnow)\+(\d+)\}|\{dump:(\w+)\}`)

// ixExpand replaces the placeholders of args.
func ixExpand(t *testing.T, args []string, now time.Time, dumps map[string]string) []string {
	t.Helper()
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = ixPlaceholder.ReplaceAllStringFunc(a, func(m string) string {
			p := ixPlaceholder.FindStringSubmatch(m)
			if p[3] != "" {
				d, ok := dumps[p[3]]
				if !ok {
					t.Fatalf("unknown dump %q", p[3])
				}
				return d
			}
			n, _ := strconv.ParseInt(p[2], 10, 64)
			if p[1] == "now" {
				return strconv.FormatInt(now.Unix()+n, 10)
			}
			return strconv.FormatInt(now.UnixMilli()+n, 10)
		})
	}
	return out
}

// ---- lanes ----

// ixLane is a redis-server used straight and another behind an in-process proxy, with a
// control connection to each server.
type ixLane struct {
	direct, proxy string
	ctlD, ctlP    *ixConn
	schema        *rewrite.Schema
}

func ixStartLanes(t *testing.T, n int) chan *ixLane {
	t.Helper()
	lanes := make(chan *ixLane, n)
	for range n {
		lanes <- ixStartLane(t)
	}
	return lanes
}

func ixStartLane(t *testing.T, tweak ...func(*Options)) *ixLane {
	t.Helper()
	d := redistest.Start(t)
	up := redistest.Start(t)
	p := startProxy(t, up, tweak...)
	return &ixLane{direct: d.Addr(), proxy: p.Addr().String(),
		ctlD: ixDial(t, d.Addr()), ctlP: ixDial(t, up.Addr()), schema: testSchema(t)}
}

// ixMakeDumps creates the ixDumps payloads on one lane's direct server.
func ixMakeDumps(t *testing.T, lanes chan *ixLane) map[string]string {
	t.Helper()
	l := <-lanes
	defer func() { lanes <- l }()
	out := map[string]string{}
	for name, cmds := range ixDumps {
		l.ctlD.must(t, "FLUSHALL")
		for _, c := range cmds {
			l.ctlD.do(t, c...)
		}
		v, ok := l.ctlD.do(t, "DUMP", "k").(string)
		if !ok {
			t.Fatalf("DUMP for %s failed", name)
		}
		out[name] = v
	}
	l.ctlD.must(t, "FLUSHALL")
	return out
}

// check runs case c in one mode on both servers and compares replies and state.
func (l *ixLane) check(t *testing.T, c *ixCase, mode string, dumps map[string]string) {
	l.ctlD.must(t, "FLUSHALL")
	l.ctlP.must(t, "FLUSHALL")
	start := time.Now()
	dc, pc := ixDial(t, l.direct), ixDial(t, l.proxy)
	defer dc.nc.Close()
	defer pc.nc.Close()
	if mode == "resp3" {
		// HELLO's reply carries the upstream connection id, which differs behind a proxy.
		for _, conn := range []*ixConn{dc, pc} {
			if r := conn.raw(t, "HELLO", "3"); r[0] != '%' {
				t.Fatalf("HELLO 3: %q", r)
			}
		}
	}
	failed := false
	for _, st := range c.steps {
		a := ixExpand(t, st.args, start, dumps)
		var w, g []byte
		if st.kind == "behind" {
			w, g = l.ctlD.raw(t, a...), l.ctlP.raw(t, a...)
		} else {
			w, g = dc.raw(t, a...), pc.raw(t, a...)
		}
		if !bytes.Equal(w, g) {
			t.Errorf("%s %s:\n  redis: %q\n  proxy: %q", st.kind, st.what, w, g)
			failed = true
		}
	}
	var cmds [][]string
	for _, r := range c.runs {
		cmds = append(cmds, ixExpand(t, r.args, start, dumps))
	}
	runAt := time.Now().UnixMilli()
	got := ixSend(t, pc, mode, cmds)
	var want []byte
	if c.replies {
		want = ixExpectedReplies(c, mode)
		for _, st := range c.direct {
			dc.raw(t, ixExpand(t, st.args, start, dumps)...)
		}
	} else {
		want = ixSend(t, dc, mode, cmds)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("runs (%s):\n%s", c.origin, ixDescribe(want, got))
		failed = true
	}
	state := ixReadIndex(t, l.ctlP, l.schema)
	if d := ixDiffState(c.want, state, runAt); len(d) > 0 {
		t.Errorf("index and bookkeeping after the runs (%s):\n  %s", c.origin, strings.Join(d, "\n  "))
		failed = true
	}
	if d := ixDiffData(ixReadData(t, l.ctlD, l.schema), ixReadData(t, l.ctlP, l.schema)); len(d) > 0 {
		t.Errorf("data keys differ between redis and the proxied redis:\n  %s", strings.Join(d, "\n  "))
		failed = true
	}
	if !slices.ContainsFunc(c.steps, func(s ixStep) bool { return s.kind == "behind" }) {
		if d := ixDiffState(ixDerive(t, l.ctlP, l.schema), state, runAt); len(d) > 0 {
			t.Errorf("bookkeeping differs from what the session keys imply:\n  %s", strings.Join(d, "\n  "))
			failed = true
		}
	}
	if failed && c.bug != "" {
		t.Errorf("KNOWN PROXY BUG (%s): %s", c.origin, c.bug)
	}
}

// ixSend runs cmds on conn (one command per write, or all in one MULTI/EXEC write) and
// returns the raw replies.
func ixSend(t *testing.T, conn *ixConn, mode string, cmds [][]string) []byte {
	t.Helper()
	if mode == "multi" {
		b := encode("MULTI")
		for _, c := range cmds {
			b = append(b, encode(c...)...)
		}
		b = append(b, encode("EXEC")...)
		conn.send(t, b)
		return conn.read(t, len(cmds)+2)
	}
	var out []byte
	for _, c := range cmds {
		out = append(out, conn.raw(t, c...)...)
	}
	return out
}

// ixExpectedReplies is what the proxy must answer to a case with replies in mode.
func ixExpectedReplies(c *ixCase, mode string) []byte {
	var b []byte
	if mode == "multi" {
		b = append(b, "+OK\r\n"...)
		for range c.runs {
			b = append(b, "+QUEUED\r\n"...)
		}
		b = fmt.Appendf(b, "*%d\r\n", len(c.runs))
	}
	for _, r := range c.runs {
		b = append(b, strings.ReplaceAll(r.reply, "{sessions-help}", ixHelpReply())...)
	}
	return b
}

// ixHelpReply is SESSIONS.HELP's reply: status lines, as Redis' own HELP subcommands.
func ixHelpReply() string {
	b := fmt.Sprintf("*%d\r\n", len(sessionsHelp))
	for _, l := range sessionsHelp {
		b += "+" + l + "\r\n"
	}
	return b
}

func ixDescribe(want, got []byte) string {
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	lo := max(0, i-40)
	cl := func(b []byte) string {
		if lo >= len(b) {
			return `""`
		}
		return strconv.Quote(string(b[lo:min(len(b), i+160)]))
	}
	return fmt.Sprintf("  want %d bytes, got %d; first difference at byte %d:\n  want: %s\n  got:  %s",
		len(want), len(got), i, cl(want), cl(got))
}

// ---- state ----

// ixIsBookkeeping says whether key is an index key of some rule or one of the proxy's own.
func ixIsBookkeeping(s *rewrite.Schema, key string) bool {
	if strings.HasPrefix(key, s.Prefix) {
		return true
	}
	for r, rule := range s.Rules {
		if rule.Layout == rewrite.LayoutGlobalZSet {
			if key == rule.IndexKey {
				return true
			}
		} else if _, ok := s.UIDFromIndexKey(r, key); ok {
			return true
		}
	}
	return false
}

// ixReadIndex reads every index and bookkeeping key of DBs 0..ixDBs-1.
func ixReadIndex(t *testing.T, c *ixConn, s *rewrite.Schema) ixState {
	t.Helper()
	st := ixState{}
	defer c.must(t, "SELECT", "0")
	for db := range ixDBs {
		c.must(t, "SELECT", strconv.Itoa(db))
		for _, k := range ixStrings(c.do(t, "KEYS", "*")) {
			if !ixIsBookkeeping(s, k) {
				continue
			}
			m := map[string]string{}
			switch typ := c.do(t, "TYPE", k); typ {
			case "set":
				for _, v := range ixStrings(c.do(t, "SMEMBERS", k)) {
					m[v] = ""
				}
			case "zset", "hash":
				var kv []string
				if typ == "zset" {
					kv = ixStrings(c.do(t, "ZRANGE", k, "0", "-1", "WITHSCORES"))
				} else {
					kv = ixStrings(c.do(t, "HGETALL", k))
				}
				for i := 0; i+1 < len(kv); i += 2 {
					m[kv[i]] = kv[i+1]
				}
			default:
				m[fmt.Sprintf("<a %v>", typ)] = ""
			}
			st[fmt.Sprintf("%d %s", db, k)] = m
		}
	}
	return st
}

// ixDiffState lists how got differs from want; "~N" values in want are deadlines N seconds
// after runAt (ms).
func ixDiffState(want, got ixState, runAt int64) []string {
	var out []string
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		w, inW := want[k]
		g, inG := got[k]
		switch {
		case !inW:
			out = append(out, fmt.Sprintf("unexpected %s = %s", k, ixShow(g, runAt)))
			continue
		case !inG:
			out = append(out, fmt.Sprintf("missing %s = %s", k, ixShow(w, runAt)))
			continue
		}
		same := len(w) == len(g)
		for m, wv := range w {
			gv, ok := g[m]
			same = same && ok && ixValueMatches(wv, gv, runAt)
		}
		if !same {
			out = append(out, fmt.Sprintf("%s = %s, want %s", k, ixShow(g, runAt), ixShow(w, runAt)))
		}
	}
	return out
}

func ixValueMatches(want, got string, runAt int64) bool {
	if n, ok := strings.CutPrefix(want, "~"); ok {
		secs, err := strconv.ParseInt(n, 10, 64)
		g, gerr := strconv.ParseFloat(got, 64)
		return err == nil && gerr == nil && math.Abs(g-float64(runAt+secs*1000)) <= ixTolerance
	}
	return want == got
}

// ixShow renders members sorted, with deadlines (scores that are ms since 1970) relative to runAt.
func ixShow(m map[string]string, runAt int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		if f, err := strconv.ParseFloat(v, 64); err == nil && f > 1e12 && f < 1e14 { // a deadline in ms
			v = fmt.Sprintf("%s(now%+.1fs)", v, (f-float64(runAt))/1000)
		}
		if v != "" {
			k += "=" + v
		}
		parts = append(parts, k)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// ixVal is a data key's type, value and TTL.
type ixVal struct {
	typ, val string
	pttl     int64
}

// ixReadData reads every data key (not index or bookkeeping) of DBs 0..ixDBs-1.
func ixReadData(t *testing.T, c *ixConn, s *rewrite.Schema) map[string]ixVal {
	t.Helper()
	out := map[string]ixVal{}
	defer c.must(t, "SELECT", "0")
	for db := range ixDBs {
		c.must(t, "SELECT", strconv.Itoa(db))
		for _, k := range ixStrings(c.do(t, "KEYS", "*")) {
			if ixIsBookkeeping(s, k) {
				continue
			}
			v := ixVal{typ: fmt.Sprint(c.do(t, "TYPE", k))}
			var parts []string
			switch v.typ {
			case "string":
				parts = []string{fmt.Sprint(c.do(t, "GET", k))}
			case "hash":
				kv := ixStrings(c.do(t, "HGETALL", k))
				for i := 0; i+1 < len(kv); i += 2 {
					parts = append(parts, kv[i]+"="+kv[i+1])
				}
				sort.Strings(parts)
			case "set":
				parts = ixStrings(c.do(t, "SMEMBERS", k))
				sort.Strings(parts)
			case "zset":
				parts = ixStrings(c.do(t, "ZRANGE", k, "0", "-1", "WITHSCORES"))
			case "list":
				parts = ixStrings(c.do(t, "LRANGE", k, "0", "-1"))
			}
			v.val = strings.Join(parts, " ")
			v.pttl, _ = c.do(t, "PTTL", k).(int64)
			out[fmt.Sprintf("%d %s", db, k)] = v
		}
	}
	return out
}

func ixDiffData(want, got map[string]ixVal) []string {
	var out []string
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		w, inW := want[k]
		g, inG := got[k]
		ttlOK := (w.pttl < 0) == (g.pttl < 0) && math.Abs(float64(w.pttl-g.pttl)) <= ixTolerance
		if inW != inG || w.typ != g.typ || w.val != g.val || !ttlOK {
			out = append(out, fmt.Sprintf("%s: redis %+v (present %v), proxied %+v (present %v)", k, w, inW, g, inG))
		}
	}
	return out
}

// ixDerive computes the bookkeeping the session keys of DBs 0..ixDBs-1 imply, following the
// documented rules (rewrite.Schema; numeric uids per rewrite.NumericUID), independently of the
// Lua scripts.
func ixDerive(t *testing.T, c *ixConn, s *rewrite.Schema) ixState {
	t.Helper()
	st := ixState{}
	add := func(db int, key, member, val string) {
		k := fmt.Sprintf("%d %s", db, key)
		if st[k] == nil {
			st[k] = map[string]string{}
		}
		st[k][member] = val
	}
	defer c.must(t, "SELECT", "0")
	for db := range ixDBs {
		c.must(t, "SELECT", strconv.Itoa(db))
		for _, k := range ixStrings(c.do(t, "KEYS", "*")) {
			r := s.Match([]byte(k))
			if r < 0 {
				continue
			}
			rule := s.Rules[r]
			uid, ok := ixOwner(t, c, k, rule)
			if !ok || (rule.Layout == rewrite.LayoutGlobalZSet && !rewrite.NumericUID(uid)) {
				continue
			}
			deadline, _ := c.do(t, "PEXPIRETIME", k).(int64)
			add(db, s.OwnersKey(), k, uid)
			score := "inf"
			if deadline > 0 {
				score = strconv.FormatInt(deadline, 10)
				add(db, s.LedgerKey(), k, score)
			}
			switch rule.Layout {
			case rewrite.LayoutSet:
				add(db, s.IndexKey(r, uid), s.SessionID(r, k), "")
			case rewrite.LayoutZSet:
				add(db, s.IndexKey(r, uid), s.SessionID(r, k), score)
			case rewrite.LayoutGlobalZSet:
				add(db, rule.IndexKey, k, uid)
			}
		}
	}
	return st
}

// ixOwner reads a session's owner: a non-empty hash field, or a non-empty string or an
// integral number (|n| < 2^53) at the JSON path of a string value.
func ixOwner(t *testing.T, c *ixConn, k string, rule rewrite.Rule) (string, bool) {
	t.Helper()
	if rule.Field != "" {
		if c.do(t, "TYPE", k) != "hash" {
			return "", false
		}
		v, ok := c.do(t, "HGET", k, rule.Field).(string)
		return v, ok && v != ""
	}
	raw, ok := c.do(t, "GET", k).(string)
	if !ok {
		return "", false
	}
	var doc any
	if json.Unmarshal([]byte(raw), &doc) != nil {
		return "", false
	}
	for _, part := range strings.Split(rule.JSONPath, ".") {
		if part == "" {
			continue
		}
		m, ok := doc.(map[string]any)
		if !ok {
			return "", false
		}
		doc = m[part]
	}
	switch v := doc.(type) {
	case string:
		return v, v != ""
	case float64:
		if v == math.Floor(v) && math.Abs(v) < 1<<53 {
			return strconv.FormatInt(int64(v), 10), true
		}
	}
	return "", false
}

// ---- connections ----

// ixConn is a test connection that sends commands and reads raw replies; do decodes them.
type ixConn struct {
	nc net.Conn
	br *bufio.Reader
}

func ixDial(t *testing.T, addr string) *ixConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &ixConn{nc: nc, br: bufio.NewReaderSize(nc, 64<<10)}
}

func (c *ixConn) send(t *testing.T, b []byte) {
	t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func (c *ixConn) read(t *testing.T, n int) []byte {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []byte
	for i := range n {
		var err error
		if out, err = resp.AppendReply(out, c.br); err != nil {
			t.Fatalf("reply %d of %d: %v (so far %q)", i+1, n, err, clip(out))
		}
	}
	return out
}

// raw sends one command and returns its raw reply.
func (c *ixConn) raw(t *testing.T, args ...string) []byte {
	t.Helper()
	c.send(t, encode(args...))
	return c.read(t, 1)
}

// do sends one command and returns its decoded reply (string, int64, nil, []any, ixErr).
func (c *ixConn) do(t *testing.T, args ...string) any {
	t.Helper()
	b := c.raw(t, args...)
	v, rest, err := ixDecode(b)
	if err != nil || len(rest) > 0 {
		t.Fatalf("%v: cannot decode %q: %v", args, b, err)
	}
	return v
}

// must runs a command that must answer +OK.
func (c *ixConn) must(t *testing.T, args ...string) {
	t.Helper()
	if v := c.do(t, args...); v != "OK" {
		t.Fatalf("%v: %v", args, v)
	}
}

type ixErr string

// ixDecode decodes one RESP2/RESP3 reply.
func ixDecode(b []byte) (any, []byte, error) {
	i := bytes.Index(b, []byte("\r\n"))
	if i < 1 {
		return nil, nil, fmt.Errorf("no reply line in %q", b)
	}
	line, rest := string(b[1:i]), b[i+2:]
	switch b[0] {
	case '+':
		return line, rest, nil
	case '-':
		return ixErr(line), rest, nil
	case ':':
		n, err := strconv.ParseInt(line, 10, 64)
		return n, rest, err
	case ',':
		return line, rest, nil
	case '_':
		return nil, rest, nil
	case '$':
		n, err := strconv.Atoi(line)
		if err != nil || n < 0 {
			return nil, rest, err
		}
		if len(rest) < n+2 {
			return nil, nil, fmt.Errorf("short bulk")
		}
		return string(rest[:n]), rest[n+2:], nil
	case '*', '%', '~':
		n, err := strconv.Atoi(line)
		if err != nil || n < 0 {
			return nil, rest, err
		}
		if b[0] == '%' {
			n *= 2
		}
		out := make([]any, 0, n)
		for range n {
			var v any
			if v, rest, err = ixDecode(rest); err != nil {
				return nil, nil, err
			}
			out = append(out, v)
		}
		return out, rest, nil
	}
	return nil, nil, fmt.Errorf("unknown reply type %q", b[0])
}

// ixStrings turns an array reply of strings into a slice.
func ixStrings(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, x := range a {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// ---- Go-built cases ----

// ixPipeline builds n mixed session writes from a fixed seed: hash, JSON, scored and global
// sessions; owner changes, TTLs, renames, copies, moves, deletes, STORE commands and bit edits
// overwriting sessions, and errors among them; now and then a plain write of a STORE source.
func ixPipeline(n int, seed uint64) [][]string {
	rng := rand.New(rand.NewPCG(seed, 1))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	key := func() string {
		return pick("session:", "sess:", "zsess:", "gsess:") + pick("1", "2", "3")
	}
	uid := func() string { return pick("1", "2", "3") }
	js := func() string { return `{"passport":{"user":"` + uid() + `"},"n":` + strconv.Itoa(rng.IntN(100)) + `}` }
	var out [][]string
	for range n {
		var c string
		switch rng.IntN(29) {
		case 0:
			c = "HSET session:" + pick("1", "2", "3") + " userid " + uid() + " name n"
		case 1:
			c = "HSET zsess:" + pick("1", "2", "3") + " uid " + uid()
		case 2:
			c = "HSET gsess:" + pick("1", "2", "3") + " uid " + pick("1", "2", "x", "-4")
		case 3:
			c = "HDEL " + key() + " " + pick("userid", "uid", "name")
		case 4:
			c = "HSETNX " + key() + " " + pick("userid", "uid") + " " + uid()
		case 5:
			c = "HINCRBY " + key() + " " + pick("userid", "uid") + " 1"
		case 6:
			c = "SET sess:" + pick("1", "2", "3") + " " + js() + pick("", " EX 1000", " PX 2000000", " KEEPTTL", " NX", " XX", " GET")
		case 7:
			c = "SETEX sess:" + pick("1", "2") + " " + pick("500", "-1") + " " + js()
		case 8:
			c = "GETDEL " + key()
		case 9:
			c = "GETEX sess:" + pick("1", "2", "3") + pick(" PERSIST", " EX 700", "")
		case 10:
			c = "APPEND sess:" + pick("1", "2", "3") + " x"
		case 11:
			c = pick("EXPIRE ", "PEXPIRE ") + key() + " " + pick("1000", "2000000", "-1") + pick("", " NX", " XX", " GT", " LT")
		case 12:
			c = "PERSIST " + key()
		case 13:
			c = pick("DEL ", "UNLINK ") + key() + " " + key()
		case 14:
			c = pick("RENAME ", "RENAMENX ") + key() + " " + key()
		case 15:
			c = "COPY " + key() + " " + key() + pick("", " REPLACE", " DB 1", " DB 2 REPLACE")
		case 16:
			c = "MSET sess:" + pick("1", "2", "3") + " " + js() + " other v"
		case 17:
			c = "MOVE " + key() + " " + pick("1", "2")
		case 18:
			c = "SET " + key() + " plain"
		case 19:
			c = "HSET " + key() + " " + pick("userid", "uid") + " " + uid()
		case 20:
			c = "EXPIREAT " + key() + " " + pick("1", "4000000000")
		case 21:
			c = "SETRANGE sess:" + pick("1", "2", "3") + " 21 " + uid()
		case 22:
			c = pick("SUNIONSTORE ", "SDIFFSTORE ") + key() + " " + pick("set1", "nosuch")
		case 23:
			c = pick("ZUNIONSTORE ", "ZINTERSTORE ") + key() + " 1 " + pick("zset1", "set1", "nosuch")
		case 24:
			c = "BITOP OR " + key() + " " + pick("sess:1", "sess:2", "nosuch")
		case 25:
			c = "SORT " + pick("list1", "nosuch") + " STORE " + key()
		case 26:
			c = "SETBIT sess:" + pick("1", "2", "3") + " " + pick("175", "7") + " " + pick("0", "1")
		case 27:
			c = "BITFIELD sess:" + pick("1", "2", "3") + " SET u8 168 " + pick("49", "50", "51")
		case 28:
			c = pick("GEORADIUS geo 13 38 200 km STORE ", "GEORADIUS geo 13 38 200 km STOREDIST ",
				"GEOSEARCHSTORE ") + key()
			if strings.HasPrefix(c, "GEOSEARCHSTORE") {
				c += " geo FROMLONLAT 13 38 BYRADIUS 200 km"
			}
		}
		if rng.IntN(12) == 0 { // sources for the STORE commands, between the session writes
			out = append(out, ixSplitWords(pick("SADD set1 x y", "ZADD zset1 1 m", "RPUSH list1 2 1",
				"GEOADD geo 13.361389 38.115556 Palermo")))
		}
		out = append(out, ixSplitWords(c))
	}
	return out
}

// ixSplitWords splits at single spaces (JSON values here have none).
func ixSplitWords(s string) []string { return strings.Split(s, " ") }

// TestIndexCmdsPipeline sends 100 mixed session writes in one write (plain, RESP3, and in one
// MULTI/EXEC): the reply bytes equal direct Redis', the data matches, and the bookkeeping is
// what the sessions imply.
func TestIndexCmdsPipeline(t *testing.T) {
	t.Parallel()
	l := ixStartLane(t)
	for i, mode := range []string{"plain", "resp3", "multi"} {
		t.Run(mode, func(t *testing.T) {
			cmds := ixPipeline(100, uint64(i+1))
			l.ctlD.must(t, "FLUSHALL")
			l.ctlP.must(t, "FLUSHALL")
			dc, pc := ixDial(t, l.direct), ixDial(t, l.proxy)
			if mode == "resp3" {
				dc.raw(t, "HELLO", "3")
				pc.raw(t, "HELLO", "3")
			}
			var b []byte
			if mode == "multi" {
				b = encode("MULTI")
			}
			for _, c := range cmds {
				b = append(b, encode(c...)...)
			}
			n := len(cmds)
			if mode == "multi" {
				b = append(b, encode("EXEC")...)
				n += 2
			}
			dc.send(t, b)
			want := dc.read(t, n)
			runAt := time.Now().UnixMilli()
			pc.send(t, b)
			got := pc.read(t, n)
			if !bytes.Equal(want, got) {
				t.Errorf("pipeline replies:\n%s", ixDescribe(want, got))
			}
			if d := ixDiffData(ixReadData(t, l.ctlD, l.schema), ixReadData(t, l.ctlP, l.schema)); len(d) > 0 {
				t.Errorf("data keys differ:\n  %s", strings.Join(d, "\n  "))
			}
			state := ixReadIndex(t, l.ctlP, l.schema)
			if len(state) == 0 {
				t.Errorf("no bookkeeping at all after the pipeline")
			}
			if d := ixDiffState(ixDerive(t, l.ctlP, l.schema), state, runAt); len(d) > 0 {
				t.Errorf("bookkeeping differs from what the session keys imply:\n  %s", strings.Join(d, "\n  "))
			}
		})
	}
}

// ixNoScriptRetries reads the proxy's noscript_retries_total counter.
func ixNoScriptRetries(t *testing.T, reg *prometheus.Registry) float64 {
	return ixCounter(t, reg, "sessionproxy_index_noscript_retries_total")
}

// ixCounter reads a counter's value (or a histogram's sample count) from reg.
func ixCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	v, _, err := promtest.Sum(reg, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestIndexCmdsNoScript empties the script cache straight on Redis; the next pipelined session
// writes through the proxy meet NOSCRIPT, are retried after reloading, and answer and index
// as if nothing had happened.
func TestIndexCmdsNoScript(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l := ixStartLane(t, func(o *Options) { o.Registerer = reg })
	pc, dc := ixDial(t, l.proxy), ixDial(t, l.direct)
	setup := [][]string{
		{"HSET", "session:a", "userid", "1"},
		{"SET", "sess:b", `{"passport":{"user":"2"}}`, "EX", "1000"},
		{"HSET", "zsess:c", "uid", "3"},
	}
	for _, c := range setup {
		if w, g := dc.raw(t, c...), pc.raw(t, c...); !bytes.Equal(w, g) {
			t.Fatalf("setup %v: redis %q, proxy %q", c, w, g)
		}
	}
	before := ixNoScriptRetries(t, reg)
	l.ctlP.must(t, "SCRIPT", "FLUSH")
	writes := [][]string{
		{"HSET", "session:a", "userid", "5"},
		{"SET", "sess:b", `{"passport":{"user":"6"}}`, "KEEPTTL"},
		{"EXPIRE", "zsess:c", "2000"},
		{"HSET", "gsess:d", "uid", "7"},
		{"SET", "session:x", "v", "EX", "-1"}, // an error reply among them
		{"COPY", "session:a", "session:e"},
		{"DEL", "sess:b"},
		{"HSET", "session:f", "userid", "5", "name", "f"},
	}
	var b []byte
	for _, c := range writes {
		b = append(b, encode(c...)...)
	}
	dc.send(t, b)
	want := dc.read(t, len(writes))
	runAt := time.Now().UnixMilli()
	pc.send(t, b)
	got := pc.read(t, len(writes))
	if !bytes.Equal(want, got) {
		t.Errorf("replies after SCRIPT FLUSH:\n%s", ixDescribe(want, got))
	}
	if n := ixNoScriptRetries(t, reg) - before; n < 1 {
		t.Errorf("noscript_retries_total grew by %v: the NOSCRIPT path was not taken", n)
	}
	wantState := ixState{
		"0 user:5":                 {"a": "", "e": "", "f": ""},
		"0 zuser:3":                {"c": "~2000"},
		"0 idx-session-uid":        {"gsess:d": "7"},
		"0 sessionproxy:owners":    {"session:a": "5", "session:e": "5", "session:f": "5", "zsess:c": "3", "gsess:d": "7"},
		"0 sessionproxy:deadlines": {"zsess:c": "~2000"},
	}
	state := ixReadIndex(t, l.ctlP, l.schema)
	if d := ixDiffState(wantState, state, runAt); len(d) > 0 {
		t.Errorf("index after the retried writes:\n  %s", strings.Join(d, "\n  "))
	}
	if d := ixDiffState(ixDerive(t, l.ctlP, l.schema), state, runAt); len(d) > 0 {
		t.Errorf("bookkeeping differs from what the session keys imply:\n  %s", strings.Join(d, "\n  "))
	}
	if d := ixDiffData(ixReadData(t, l.ctlD, l.schema), ixReadData(t, l.ctlP, l.schema)); len(d) > 0 {
		t.Errorf("data keys differ:\n  %s", strings.Join(d, "\n  "))
	}

	// SESSIONS.* run the sessions script by SHA: retried the same way.
	l.ctlP.must(t, "SCRIPT", "FLUSH")
	pc.send(t, append(encode("SESSIONS.LIST", "5"), encode("SESSIONS.COUNT", "3", "scored")...))
	if got, want := string(pc.read(t, 2)), "*3\r\n$1\r\na\r\n$1\r\ne\r\n$1\r\nf\r\n:1\r\n"; got != want {
		t.Errorf("SESSIONS.LIST/COUNT after SCRIPT FLUSH: %q, want %q", got, want)
	}
}

// TestIndexCmdsNoScriptOrder: after SCRIPT FLUSH, a pipeline mixing session writes (single and
// merged script calls) with plain commands on the same keys behaves as it does on Redis: a
// plain read after a session write sees it, a plain write before a DEL is deleted by it.
// Regression: the proxy used to retry the failed script calls after the rest of the batch had
// run; now the first upstream request ends at the first script call, which meets the emptied
// cache and is retried before anything after it is sent.
func TestIndexCmdsNoScriptOrder(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l := ixStartLane(t, func(o *Options) { o.Registerer = reg })
	pc, dc := ixDial(t, l.proxy), ixDial(t, l.direct)
	pc.raw(t, "HSET", "session:warm", "userid", "1") // the shared connection has loaded the scripts
	dc.raw(t, "HSET", "session:warm", "userid", "1")
	// Both shared connections are up (the proxy dials them at start) before the flush: one
	// dialed after it would load the scripts, and the NOSCRIPT path would not be taken.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		list, _ := l.ctlP.do(t, "CLIENT", "LIST").(string)
		if strings.Count(list, "cmd=script|load")+strings.Count(list, "cmd=evalsha") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy's shared connections are not both up:\n%s", list)
		}
	}
	cmds := [][]string{
		{"HSET", "session:a", "userid", "1"}, // a merged run of two writes: the first script call
		{"SET", "sess:d", `{"passport":{"user":"2"}}`},
		{"HGET", "session:a", "userid"},    // plain: must see the write before it
		{"DEL", "session:b"},               // rewritten
		{"HSET", "session:b", "name", "x"}, // plain (not the owner field): must survive the DEL
		{"HGETALL", "session:b"},
		{"HSET", "session:c", "userid", "2"}, // another merged run
		{"EXPIRE", "session:c", "1000"},
		{"HGETALL", "session:c"},
		{"SADD", "src", "x"},                // plain
		{"SUNIONSTORE", "session:c", "src"}, // rewritten: must see src
		{"TYPE", "session:c"},               // plain: a set now
		{"SESSIONS.LIST", "2", "express"},   // the sessions script, retried too
		{"DEL", "sess:d"},                   // rewritten, last of the batch
	}
	var b, direct []byte
	for _, c := range cmds {
		b = append(b, encode(c...)...)
		if c[0] != "SESSIONS.LIST" {
			direct = append(direct, encode(c...)...)
		}
	}
	// Direct Redis does not know SESSIONS.LIST: the proxy's answer goes in its place.
	dc.send(t, direct)
	var want []byte
	for _, c := range cmds {
		if c[0] == "SESSIONS.LIST" {
			want = append(want, "*1\r\n$1\r\nd\r\n"...)
		} else {
			want = append(want, dc.read(t, 1)...)
		}
	}
	before := ixNoScriptRetries(t, reg)
	l.ctlP.must(t, "SCRIPT", "FLUSH")
	pc.send(t, b)
	got := pc.read(t, len(cmds))
	if !bytes.Equal(want, got) {
		t.Errorf("pipeline after SCRIPT FLUSH:\n%s", ixDescribe(want, got))
	}
	if n := ixNoScriptRetries(t, reg) - before; n < 1 {
		t.Errorf("noscript_retries_total grew by %v: the NOSCRIPT path was not taken", n)
	}
	if d := ixDiffData(ixReadData(t, l.ctlD, l.schema), ixReadData(t, l.ctlP, l.schema)); len(d) > 0 {
		t.Errorf("data keys differ:\n  %s", strings.Join(d, "\n  "))
	}
	if d := ixDiffState(ixDerive(t, l.ctlP, l.schema), ixReadIndex(t, l.ctlP, l.schema), time.Now().UnixMilli()); len(d) > 0 {
		t.Errorf("bookkeeping differs from what the session keys imply:\n  %s", strings.Join(d, "\n  "))
	}
}

// TestIndexCmdsCorpusFormat checks the parser on the format's corner cases.
func TestIndexCmdsCorpusFormat(t *testing.T) {
	src := "# c\n=== one\nsetup HSET session:a userid 1\nbehind DEL x\nrun SESSIONS.LIST 1\n" +
		"reply \"*0\\r\\n\"\ndirect DEL session:a\nwant @2 user:1 {a,b}\nwant ledger {session:a=~10}\nbug why\n" +
		"=== two\nrun SET k \"a b\" {now+5}\nwant nothing\n"
	cs, err := ixParse("f.txt", src)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].name != "f/one" || cs[0].bug != "why" || len(cs[0].steps) != 2 ||
		len(cs[0].runs) != 1 || cs[0].runs[0].reply != "*0\r\n" || len(cs[0].direct) != 1 || !cs[0].replies {
		t.Fatalf("parsed %+v", cs[0])
	}
	if w := cs[0].want; len(w) != 2 || w["2 user:1"]["b"] != "" || w["0 sessionproxy:deadlines"]["session:a"] != "~10" {
		t.Errorf("want %v", w)
	}
	if a := cs[1].runs[0].args; !slices.Equal(a, []string{"SET", "k", "a b", "{now+5}"}) || len(cs[1].want) != 0 || cs[1].want == nil {
		t.Errorf("case two: %q %v", a, cs[1].want)
	}
	for _, bad := range []string{
		"run GET a\n",           // outside a case
		"=== x\nwant nothing\n", // no run
		"=== x\nrun GET a\n",    // no want
		"=== x\nrun GET a\nsetup GET b\nwant nothing\n", // setup after run
		"=== x\nrun GET a\nreply x\nwant nothing\n",     // unquoted reply
		"=== x\nrun A\nreply \"1\"\nrun B\nwant nothing\n",
		"=== x\nrun GET a\ndirect DEL a\nwant nothing\n",
		"=== x\nrun GET a\nwant user:1 a\n",
		"=== x\nrun GET \"a\n",
		"=== x\nrun GET a\nfoo\n",
	} {
		if _, err := ixParse("f.txt", bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestIndexCmdsMaxArgs: the longest command the proxy still rewrites (rewrite.MaxArgs
// arguments: a DEL of MaxArgs-1 session keys) fits the script's unpack() and cleans the index.
func TestIndexCmdsMaxArgs(t *testing.T) {
	t.Parallel()
	l := ixStartLane(t)
	pc, dc := ixDial(t, l.proxy), ixDial(t, l.direct)
	del := []string{"DEL"}
	var b []byte
	for i := range rewrite.MaxArgs - 1 {
		k := "session:" + strconv.Itoa(i)
		del = append(del, k)
		b = append(b, encode("HSET", k, "userid", strconv.Itoa(i%7))...)
	}
	for _, c := range []*ixConn{pc, dc} {
		c.send(t, b)
		c.read(t, len(del)-1)
	}
	if n := len(ixReadIndex(t, l.ctlP, l.schema)); n != 8 { // user:0..6 and the owner map
		t.Fatalf("%d index keys after the setup, want 8", n)
	}
	want, got := dc.raw(t, del...), pc.raw(t, del...)
	if !bytes.Equal(want, got) {
		t.Errorf("DEL of %d keys: redis %q, proxy %q", len(del)-1, want, got)
	}
	if st := ixReadIndex(t, l.ctlP, l.schema); len(st) != 0 {
		t.Errorf("%d index keys left after the DEL, want none", len(st))
	}
}

// TestIndexCmdsMigrate: MIGRATE moves sessions to another server (here the lane's direct
// one) and deletes them here, so their index entries must go; with COPY they stay. The corpus
// (store.txt) has the MIGRATEs that fail. Regression: MIGRATE had no planner.
func TestIndexCmdsMigrate(t *testing.T) {
	t.Parallel()
	l := ixStartLane(t)
	host, port, _ := net.SplitHostPort(l.direct)
	setup := [][]string{
		{"HSET", "session:a", "userid", "1"},
		{"EXPIRE", "session:a", "1000"},
		{"HSET", "session:b", "userid", "1"},
		{"SET", "sess:c", `{"passport":{"user":"2"}}`},
		{"HSET", "zsess:d", "uid", "3"},
		{"HSET", "gsess:e", "uid", "4"},
	}
	all := ixState{
		"0 user:1":          {"a": "", "b": ""},
		"0 juser:2":         {"c": ""},
		"0 zuser:3":         {"d": "inf"},
		"0 idx-session-uid": {"gsess:e": "4"},
		"0 sessionproxy:owners": {"session:a": "1", "session:b": "1", "sess:c": "2", "zsess:d": "3",
			"gsess:e": "4"},
		"0 sessionproxy:deadlines": {"session:a": "~1000"},
	}
	entry := map[string][2]string{ // session key -> its index key and member
		"session:a": {"0 user:1", "a"}, "session:b": {"0 user:1", "b"}, "sess:c": {"0 juser:2", "c"},
		"zsess:d": {"0 zuser:3", "d"}, "gsess:e": {"0 idx-session-uid", "gsess:e"},
	}
	without := func(keys ...string) ixState { // all, less the entries of keys
		st := ixState{}
		for k, m := range all {
			st[k] = maps.Clone(m)
		}
		for _, k := range keys {
			delete(st[entry[k][0]], entry[k][1])
			delete(st["0 sessionproxy:owners"], k)
			delete(st["0 sessionproxy:deadlines"], k)
		}
		maps.DeleteFunc(st, func(_ string, m map[string]string) bool { return len(m) == 0 })
		return st
	}
	cases := []struct {
		name  string
		args  []string // after MIGRATE host port
		reply string
		moved []string // session keys now on the target
		want  ixState
		bug   string
	}{
		{"one key", []string{"session:a", "0", "5000"}, "+OK\r\n", []string{"session:a"}, without("session:a"), ""},
		{"one key replace", []string{"sess:c", "0", "5000", "REPLACE"}, "+OK\r\n", []string{"sess:c"}, without("sess:c"), ""},
		{"copy keeps", []string{"session:a", "0", "5000", "COPY"}, "+OK\r\n", []string{"session:a"}, all, ""},
		{"keys of every rule", []string{"", "0", "5000", "KEYS", "session:a", "sess:c", "zsess:d", "gsess:e", "other"},
			"+OK\r\n", []string{"session:a", "sess:c", "zsess:d", "gsess:e"},
			without("session:a", "sess:c", "zsess:d", "gsess:e"), ""},
		{"keys copy replace", []string{"", "0", "5000", "copy", "replace", "KEYS", "session:b", "zsess:d"}, "+OK\r\n",
			[]string{"session:b", "zsess:d"}, all, ""},
		{"to another db", []string{"session:b", "2", "5000"}, "+OK\r\n", nil, without("session:b"), ""},
		{"a key named copy", []string{"", "0", "5000", "KEYS", "copy", "session:b"}, "+OK\r\n",
			[]string{"session:b"}, without("session:b"),
			`rewrite/plan.go planMigrate skips MIGRATE when any argument is "COPY", here a key name after KEYS`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l.ctlD.must(t, "FLUSHALL")
			l.ctlP.must(t, "FLUSHALL")
			pc := ixDial(t, l.proxy)
			for _, c := range setup {
				pc.raw(t, c...)
			}
			pc.raw(t, "SET", "copy", "x")
			if r := pc.raw(t, append([]string{"MIGRATE", host, port}, tc.args...)...); string(r) != tc.reply {
				t.Fatalf("MIGRATE: %q, want %q", r, tc.reply)
			}
			for _, k := range tc.moved {
				if n := l.ctlD.do(t, "EXISTS", k); n != int64(1) {
					t.Errorf("%s is not on the target", k)
				}
			}
			runAt := time.Now().UnixMilli()
			state := ixReadIndex(t, l.ctlP, l.schema)
			failed := false
			if d := ixDiffState(tc.want, state, runAt); len(d) > 0 {
				t.Errorf("index after MIGRATE:\n  %s", strings.Join(d, "\n  "))
				failed = true
			}
			if d := ixDiffState(ixDerive(t, l.ctlP, l.schema), state, runAt); len(d) > 0 {
				t.Errorf("bookkeeping differs from what the session keys imply:\n  %s", strings.Join(d, "\n  "))
				failed = true
			}
			if failed && tc.bug != "" {
				t.Errorf("KNOWN PROXY BUG: %s", tc.bug)
			}
		})
	}
}

// TestIndexCmdsRepairDB: SESSIONS.CHECK and REINDEX run over the client's current DB, also on a
// dedicated connection (after HELLO 3 or MULTI) where SELECT goes straight upstream: the proxy
// follows it there at once, or at EXEC inside MULTI, and RESET goes back to DB 0.
// Regression: the dedicated path used the DB the client had when it left the shared path.
func TestIndexCmdsRepairDB(t *testing.T) {
	t.Parallel()
	dbs := make(chan int, 10)
	l := ixStartLane(t, func(o *Options) {
		o.Repair = func(_ context.Context, _ *rewrite.Schema, db, rule int, fix bool) (rewrite.Report, error) {
			dbs <- db
			return rewrite.Report{Rule: "session"}, nil
		}
	})
	for _, tc := range []struct {
		name      string
		cmds      [][]string // before SESSIONS.CHECK
		pipelined bool       // the commands and the check in one write
		db        int
	}{
		{"shared", [][]string{{"SELECT", "2"}}, false, 2},
		{"resp3", [][]string{{"HELLO", "3"}, {"SELECT", "2"}}, false, 2},
		{"after MULTI and DISCARD", [][]string{{"MULTI"}, {"DISCARD"}, {"SELECT", "2"}}, false, 2},
		{"shared SELECT carried over", [][]string{{"SELECT", "2"}, {"HELLO", "3"}}, false, 2},
		{"two SELECTs", [][]string{{"HELLO", "3"}, {"SELECT", "2"}, {"select", "1"}}, false, 1},
		{"SELECT applies at EXEC", [][]string{{"HELLO", "3"}, {"MULTI"}, {"SELECT", "3"}, {"EXEC"}}, false, 3},
		{"SELECT in a discarded MULTI", [][]string{{"HELLO", "3"}, {"SELECT", "1"}, {"MULTI"}, {"SELECT", "3"}, {"DISCARD"}}, false, 1},
		{"RESET", [][]string{{"HELLO", "3"}, {"SELECT", "2"}, {"RESET"}}, false, 0},
		{"same batch", [][]string{{"HELLO", "3"}, {"SELECT", "3"}}, true, 3},
		{"same batch with EXEC", [][]string{{"MULTI"}, {"SELECT", "2"}, {"EXEC"}}, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := ixDial(t, l.proxy)
			var b []byte
			for _, c := range tc.cmds {
				if tc.pipelined {
					b = append(b, encode(c...)...)
				} else {
					pc.raw(t, c...)
				}
			}
			pc.send(t, append(b, encode("SESSIONS.CHECK")...))
			n := 1
			if tc.pipelined {
				n += len(tc.cmds)
			}
			pc.read(t, n)
			select {
			case db := <-dbs:
				if db != tc.db {
					t.Errorf("SESSIONS.CHECK ran over DB %d, want %d", db, tc.db)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Repair was not called")
			}
		})
	}
}

// TestIndexCmdsRepairOrder: SESSIONS.CHECK and REINDEX keep their place in a pipeline, like any
// command: the session write before them in the same write has reached Redis when they run.
func TestIndexCmdsRepairOrder(t *testing.T) {
	t.Parallel()
	seen := make(chan string, 10) // what Repair found: session:a's owner when it ran
	var up string
	l := ixStartLane(t, func(o *Options) {
		o.Repair = func(_ context.Context, _ *rewrite.Schema, db, rule int, fix bool) (rewrite.Report, error) {
			seen <- ixPeek(up, "HGET", "session:a", "userid")
			return rewrite.Report{Rule: "session"}, nil
		}
	})
	up = l.ctlP.nc.RemoteAddr().String()
	for _, tc := range []struct {
		name, bug string
		before    [][]string // sent on their own first
	}{
		{"shared", "", nil},
		{"resp3", "dedicated.go forwardCounted runs the repair (runRepair in appendCommand) while it builds the " +
			"batch's upstream write, before the commands ahead of it in the batch are sent", [][]string{{"HELLO", "3"}}},
		{"after MULTI and DISCARD", "as in resp3", [][]string{{"MULTI"}, {"DISCARD"}}},
	} {
		for i, check := range []string{"SESSIONS.CHECK", "SESSIONS.REINDEX"} {
			t.Run(tc.name+"/"+check, func(t *testing.T) {
				pc := ixDial(t, l.proxy)
				for _, c := range tc.before {
					pc.raw(t, c...)
				}
				uid := strconv.Itoa(10*i + len(tc.before) + 1)
				pc.send(t, append(encode("HSET", "session:a", "userid", uid), encode(check)...))
				pc.read(t, 2)
				select {
				case got := <-seen:
					if got != uid {
						t.Errorf("%s ran with session:a's owner %q, want %q (the HSET just before it)", check, got, uid)
						if tc.bug != "" {
							t.Errorf("KNOWN PROXY BUG: %s", tc.bug)
						}
					}
				case <-time.After(5 * time.Second):
					t.Fatal("Repair was not called")
				}
			})
		}
	}
}

// ixPeek runs one command on a new connection to addr and returns its reply, decoded and
// printed (for use where there is no *testing.T, such as a Repair hook).
func ixPeek(addr string, args ...string) string {
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err.Error()
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(encode(args...)); err != nil {
		return err.Error()
	}
	b, err := resp.AppendReply(nil, bufio.NewReader(nc))
	if err != nil {
		return err.Error()
	}
	v, _, err := ixDecode(b)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprint(v)
}

// TestIndexCmdsSessionsPipeline: the proxy's own answers (errors, HELP) keep their place among
// rewritten and plain commands of one pipeline, in every mode.
func TestIndexCmdsSessionsPipeline(t *testing.T) {
	t.Parallel()
	l := ixStartLane(t)
	steps := []struct {
		cmd   []string
		reply string
	}{
		{[]string{"HSET", "session:a", "userid", "1"}, ":1\r\n"},
		{[]string{"SESSIONS.LIST", "1", "nope"}, "-ERR unknown index rule 'nope'\r\n"},
		{[]string{"HSET", "session:b", "userid", "1"}, ":1\r\n"},
		{[]string{"SESSIONS.HELP"}, ixHelpReply()},
		{[]string{"SESSIONS.LIST", "1"}, "*2\r\n$1\r\na\r\n$1\r\nb\r\n"},
		{[]string{"SESSIONS.COUNT"}, "-ERR wrong number of arguments for 'sessions.count' command\r\n"},
		{[]string{"DEL", "session:a"}, ":1\r\n"},
		{[]string{"HGET", "session:b", "userid"}, "$1\r\n1\r\n"},
		{[]string{"SESSIONS.REVOKE", "1"}, ":1\r\n"},
		{[]string{"SESSIONS.COUNT", "1"}, ":0\r\n"},
	}
	for _, mode := range []string{"plain", "resp3", "multi"} {
		t.Run(mode, func(t *testing.T) {
			l.ctlP.must(t, "FLUSHALL")
			pc := ixDial(t, l.proxy)
			if mode == "resp3" {
				pc.raw(t, "HELLO", "3")
			}
			var b []byte
			var want string
			for _, st := range steps {
				b = append(b, encode(st.cmd...)...)
				want += st.reply
			}
			n := len(steps)
			if mode == "multi" {
				b = append(append(encode("MULTI"), b...), encode("EXEC")...)
				want = "+OK\r\n" + strings.Repeat("+QUEUED\r\n", n) + fmt.Sprintf("*%d\r\n", n) + want
				n += 2
			}
			pc.send(t, b)
			if got := pc.read(t, n); string(got) != want {
				t.Errorf("pipeline:\n%s", ixDescribe([]byte(want), got))
			}
			if st := ixReadIndex(t, l.ctlP, l.schema); len(st) != 0 {
				t.Errorf("index after REVOKE: %v, want none", st)
			}
		})
	}
}

// TestIndexCmdsInterleavedPipeline: a pipeline that interleaves session writes with other
// commands answers as Redis does and goes upstream in at most two requests (the first ends at
// the first script call), not one per session write.
func TestIndexCmdsInterleavedPipeline(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l := ixStartLane(t, func(o *Options) { o.Registerer = reg })
	pc, dc := ixDial(t, l.proxy), ixDial(t, l.direct)
	const n = 30 // ~2.3 KB: one read of redcon's 4 KiB buffer, so one batch
	var b []byte
	for i := range n {
		b = append(b, encode("GET", fmt.Sprintf("plain:%d", i))...)
		b = append(b, encode("HSET", fmt.Sprintf("session:%d", i), "userid", strconv.Itoa(i%5))...)
	}
	b = append(b, encode("SMEMBERS", "user:3")...)
	dc.send(t, b)
	want := dc.read(t, 2*n+1)
	rtts := func() float64 { return ixCounter(t, reg, "sessionproxy_upstream_roundtrip_seconds") }
	before := rtts()
	pc.send(t, b)
	got := pc.read(t, 2*n+1)
	// Direct Redis has no index: its SMEMBERS is empty, the proxy's lists the users' sessions.
	wantIdx := "*6\r\n"
	if !bytes.Equal(want[:len(want)-len("*0\r\n")], got[:len(want)-len("*0\r\n")]) ||
		!bytes.HasPrefix(got[len(want)-len("*0\r\n"):], []byte(wantIdx)) {
		t.Errorf("replies:\n%s", ixDescribe(want, got))
	}
	if d := rtts() - before; d > 2 {
		t.Errorf("the pipeline took %v upstream requests, want at most 2", d)
	}
}

// TestRequestReplaceReply: a retried call's reply takes the place of its first reply, and the
// replies after it keep theirs.
func TestRequestReplaceReply(t *testing.T) {
	r := &request{reply: []byte(":1\r\n-NOSCRIPT x\r\n$1\r\na\r\n"), ends: []int{4, 17, 24}}
	r.replaceReply(1, []byte("*2\r\n:1\r\n:2\r\n"))
	if got, want := string(r.reply), ":1\r\n*2\r\n:1\r\n:2\r\n$1\r\na\r\n"; got != want {
		t.Fatalf("reply %q, want %q", got, want)
	}
	if got, want := r.ends, []int{4, 16, 23}; !slices.Equal(got, want) {
		t.Fatalf("ends %v, want %v", got, want)
	}
}

// TestIndexCmdsOwnScriptFlush: a pipeline that empties the script cache itself (SCRIPT FLUSH
// among its commands) answers as on Redis: the session write after the flush meets NOSCRIPT
// and is retried before the commands after it run (a read of what it wrote sees it).
func TestIndexCmdsOwnScriptFlush(t *testing.T) {
	t.Parallel()
	l := ixStartLane(t)
	pc, dc := ixDial(t, l.proxy), ixDial(t, l.direct)
	cmds := [][]string{
		{"HSET", "session:a", "userid", "1"},
		{"SCRIPT", "FLUSH"},
		{"HSET", "session:b", "userid", "2"},
		{"HGET", "session:b", "userid"},
		{"HSET", "session:c", "userid", "3"},
		{"script", "flush", "sync"},
		{"GET", "x"},
		{"HSET", "session:d", "userid", "4"},
		{"EXPIRE", "session:d", "100"},
		{"HGETALL", "session:d"},
		{"TTL", "session:d"},
	}
	var b []byte
	for _, c := range cmds {
		b = append(b, encode(c...)...)
	}
	dc.send(t, b)
	want := dc.read(t, len(cmds))
	pc.send(t, b)
	if got := pc.read(t, len(cmds)); !bytes.Equal(want, got) {
		t.Errorf("pipeline with its own SCRIPT FLUSH:\n%s", ixDescribe(want, got))
	}
	if d := ixDiffState(ixDerive(t, l.ctlP, l.schema), ixReadIndex(t, l.ctlP, l.schema), time.Now().UnixMilli()); len(d) > 0 {
		t.Errorf("bookkeeping differs from what the session keys imply:\n  %s", strings.Join(d, "\n  "))
	}
}
