package reaper

import (
	"fmt"
	"testing"
)

func TestParseEntry(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want entry
		bad  bool
	}{
		{in: "1733520000000000 a1 - 3 100session:abc", want: entry{seq: 1733520000000000, kind: "a", rule: 1, score: "-", uid: "100", key: "session:abc"}},
		{in: "7 r2 - 0 session:x", want: entry{seq: 7, kind: "r", rule: 2, score: "-", uid: "", key: "session:x"}},
		// uid and key may hold spaces: the uid's length says where it ends.
		{in: "9 a1 +inf 5 a b csess ion", want: entry{seq: 9, kind: "a", rule: 1, score: "+inf", uid: "a b c", key: "sess ion"}},
		{in: "9 a1 1733520000000 2 42k", want: entry{seq: 9, kind: "a", rule: 1, score: "1733520000000", uid: "42", key: "k"}},
		{in: "", bad: true},
		{in: "x a1 - 1 1k", bad: true},
		{in: "1 z1 - 1 1k", bad: true},
		{in: "1 a - 1 1k", bad: true},
		{in: "1 a1 - 9 1k", bad: true}, // uid longer than the rest
		{in: "1 a1 - -1 1k", bad: true},
	} {
		got, err := parseEntry(tc.in)
		if (err != nil) != tc.bad {
			t.Errorf("%q: err %v, want bad %v", tc.in, err, tc.bad)
			continue
		}
		tc.want.raw = tc.in
		if !tc.bad && got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// FuzzParseEntry: any outbox content (an app may write to the key) parses or is refused, never
// panics, and what parses is what emit writes back.
func FuzzParseEntry(f *testing.F) {
	f.Add("1733520000000000 a1 - 3 100session:abc")
	f.Add("9 a1 +inf 5 a b csess ion")
	f.Add("1 a1 - 9 1k")
	f.Fuzz(func(t *testing.T, s string) {
		e, err := parseEntry(s)
		if err != nil {
			return
		}
		again := fmt.Sprintf("%d %s%d %s %d ", e.seq, e.kind, e.rule, e.score, len(e.uid)) + e.uid + e.key
		e2, err := parseEntry(again)
		if err != nil || e2.seq != e.seq || e2.kind != e.kind || e2.rule != e.rule || e2.uid != e.uid || e2.key != e.key {
			t.Fatalf("%q parsed as %+v; written back %q: %+v %v", s, e, again, e2, err)
		}
	})
}
