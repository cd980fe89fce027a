package rewrite

import (
	"bytes"
	"testing"
)

// fuzzArgs splits a fuzz input into command arguments at NUL bytes: the first is the name.
func fuzzArgs(data []byte) [][]byte { return bytes.Split(data, []byte{0}) }

// runSep separates the commands of a fuzz input (ASCII record separator).
const runSep = 0x1e

// fuzzRun joins commands into one fuzz input.
func fuzzRun(cmds ...[][]byte) []byte {
	var parts [][]byte
	for _, a := range cmds {
		parts = append(parts, bytes.Join(a, []byte{0}))
	}
	return bytes.Join(parts, []byte{runSep})
}

// FuzzPlan plans arbitrary commands against the test schema: planning never panics, every ref
// is an argument a rule owns (checkRefs), and the rewritten command is a well-formed RESP
// multibulk ending in exactly the original arguments (checkApply). An input of several
// commands (separated by runSep) is also merged into one apply_many call, as the proxy merges
// a pipeline's consecutive session writes, which must be well-formed too (checkApplyMany).
func FuzzPlan(f *testing.F) {
	for _, tc := range planCases {
		f.Add(fuzzRun(args(tc.cmd)))
	}
	for _, tc := range planFindings {
		f.Add(fuzzRun(tc.args))
	}
	for _, tc := range runFindings {
		f.Add(fuzzRun(tc.cmds...))
	}
	s := testSchema(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		planMany(t, s, data)
	})
}

// planMany plans each command of a fuzz input and checks the apply_many call of those that
// touch a session.
func planMany(t *testing.T, s *Schema, data []byte) {
	t.Helper()
	var run []Writes
	for _, c := range bytes.Split(data, []byte{runSep}) {
		a := fuzzArgs(c)
		if refs := planOne(t, s, a); len(refs) > 0 {
			run = append(run, Writes{Refs: refs, Args: a})
		}
	}
	if len(run) == 0 {
		return
	}
	b := s.AppendApplyMany(nil, &fakeApplyMany, run)
	if err := checkApplyMany(s, &fakeApplyMany, run, b); err != nil {
		t.Fatalf("AppendApplyMany(%q): %v", data, err)
	}
}

// planOne runs the planner of a[0] (if any), checks its refs and the rewritten command, and
// returns the refs.
func planOne(t *testing.T, s *Schema, a [][]byte) []Ref {
	t.Helper()
	p := s.Planner(string(a[0]))
	if p == nil {
		return nil
	}
	before := cloneArgs(a)
	refs := p(nil, a)
	if !equalArgs(a, before) {
		t.Fatalf("planner changed its arguments: %q -> %q", before, a)
	}
	checkRefs(t, s, a, refs)
	if len(refs) == 0 {
		return nil
	}
	for _, byBody := range []bool{false, true} {
		b := s.AppendApply(nil, &fakeApply, byBody, refs, a)
		if err := checkApply(s, &fakeApply, byBody, refs, a, b); err != nil {
			t.Fatalf("AppendApply(%q, byBody=%v): %v", a, byBody, err)
		}
	}
	return refs
}

// planFindings are inputs FuzzPlan found interesting, kept as named cases (and fuzz seeds).
var planFindings = []struct {
	name string
	args [][]byte
}{
	{"empty command name", [][]byte{{}}},
	{"empty key", [][]byte{[]byte("DEL"), {}}},
	{"key is only a rule prefix", [][]byte{[]byte("HSET"), []byte("session:"), []byte("userid"), []byte("1")}},
	{"binary owner", [][]byte{[]byte("HSET"), []byte("gsess:\x00"), []byte("uid"), []byte("\r\n\x00")}},
	{"copy DB without a number", [][]byte{[]byte("COPY"), []byte("a"), []byte("session:b"), []byte("DB")}},
	{"move to a huge DB", [][]byte{[]byte("MOVE"), []byte("session:a"), []byte("99999999999999999999")}},
	{"move to the largest int", [][]byte{[]byte("MOVE"), []byte("session:a"), []byte("9223372036854775807")}},
	{"del of bare rule prefixes", [][]byte{[]byte("DeL"), []byte("session:"), {}, []byte("sess:"), []byte("sess:0"), []byte("zsess:")}},
	{"copy with empty keys and repeated db", [][]byte{[]byte("COPY"), {}, {}, []byte("db"), []byte("0"), []byte("DB"), []byte("0")}},
	{"copy with a bare D option", [][]byte{[]byte("COPY"), {}, []byte("gsess:"), []byte("D0")}},
	{"hdel owner after empty fields", [][]byte{[]byte("HDEL"), []byte("session:"), {}, {}, []byte("userid")}},
	{"move to a zero-padded DB", [][]byte{[]byte("MOVE"), []byte("session:000"), []byte("000000000000")}},
}

// runFindings are multi-command inputs for the apply_many path (fuzz seeds and named cases):
// writes with and without owner hints, refs in another DB, empty and binary arguments, and
// commands that touch no session between those that do.
var runFindings = []struct {
	name string
	cmds [][][]byte
}{
	{"hash, json and multi-key writes", [][][]byte{
		args("HSET session:a userid 1 name x"),
		args(`SET sess:b {"passport":{"user":"2"}} EX 60`),
		args("GET other"), // not a session write: left out of the run
		args("DEL session:a other sess:b zsess:c gsess:d"),
	}},
	{"new planners, a move last", [][][]byte{
		args("SUNIONSTORE session:a src"),
		args("BITFIELD sess:b SET u8 168 51"),
		args("GEORADIUS src 15 37 200 km STORE zsess:c STOREDIST gsess:d"),
		args("MIGRATE h 6379 '' 0 5000 KEYS session:a sess:b"),
		args("MOVE session:a 3"),
	}},
	{"binary and empty arguments", [][][]byte{
		{[]byte("HSET"), []byte("gsess:\x00"), []byte("uid"), []byte("\r\n\x00")},
		{[]byte("DEL"), {}, []byte("session:"), {}},
		{{}},
		{[]byte("SETRANGE"), []byte("sess:\xff"), []byte("0"), {}},
	}},
}

func TestPlanFindings(t *testing.T) {
	s := testSchema(t)
	for _, tc := range planFindings {
		t.Run(tc.name, func(t *testing.T) { planOne(t, s, tc.args) })
	}
	for _, tc := range runFindings {
		t.Run(tc.name, func(t *testing.T) {
			data := fuzzRun(tc.cmds...)
			if n := bytes.Count(data, []byte{runSep}); n != len(tc.cmds)-1 {
				t.Fatalf("%d separators for %d commands: an argument holds the separator", n, len(tc.cmds))
			}
			planMany(t, s, data)
		})
	}
}
