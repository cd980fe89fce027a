package rewrite

import (
	"bytes"
	"testing"
)

// fuzzArgs splits a fuzz input into command arguments at NUL bytes: the first is the name.
func fuzzArgs(data []byte) [][]byte { return bytes.Split(data, []byte{0}) }

// FuzzPlan plans arbitrary commands against the test schema: planning never panics, every ref
// is an argument a rule owns (checkRefs), and the rewritten command is a well-formed RESP
// multibulk ending in exactly the original arguments (checkApply).
func FuzzPlan(f *testing.F) {
	for _, tc := range planCases {
		f.Add(bytes.Join(args(tc.cmd), []byte{0}))
	}
	for _, tc := range planFindings {
		f.Add(bytes.Join(tc.args, []byte{0}))
	}
	s := testSchema(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		planOne(t, s, fuzzArgs(data))
	})
}

// planOne runs the planner of a[0] (if any) and checks its refs and the rewritten command.
func planOne(t *testing.T, s *Schema, a [][]byte) {
	t.Helper()
	p := s.Planner(string(a[0]))
	if p == nil {
		return
	}
	before := cloneArgs(a)
	refs := p(nil, a)
	if !equalArgs(a, before) {
		t.Fatalf("planner changed its arguments: %q -> %q", before, a)
	}
	checkRefs(t, s, a, refs)
	if len(refs) == 0 {
		return
	}
	for _, mode := range []struct{ byBody, resp3 bool }{{false, false}, {true, true}} {
		b := s.AppendApply(nil, &fakeApply, mode.byBody, mode.resp3, refs, a)
		if err := checkApply(s, &fakeApply, mode.byBody, mode.resp3, refs, a, b); err != nil {
			t.Fatalf("AppendApply(%q, byBody=%v, resp3=%v): %v", a, mode.byBody, mode.resp3, err)
		}
	}
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

func TestPlanFindings(t *testing.T) {
	s := testSchema(t)
	for _, tc := range planFindings {
		t.Run(tc.name, func(t *testing.T) { planOne(t, s, tc.args) })
	}
}
