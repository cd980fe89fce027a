package proxy

import (
	"slices"
	"testing"

	"github.com/tidwall/redcon"
)

// TestRequestEnds: where a shared run's upstream requests end. Letters: g a plain command,
// s a script call (a rewritten session write), S a SCRIPT command of the client's own.
func TestRequestEnds(t *testing.T) {
	for _, tc := range []struct {
		run  string
		want []int
	}{
		{"g", []int{1}},
		{"ggg", []int{3}},
		{"s", []int{1}},
		{"gs", []int{2}},           // the script call comes last: one request
		{"sg", []int{1, 2}},        // the first script call ends the first request
		{"gsgsg", []int{2, 5}},     // later script calls ride in the second
		{"gsSgsg", []int{2, 5, 6}}, // after the client's SCRIPT, the next script call ends one again
		{"Sg", []int{2}},
		{"gSs", []int{3}},
		{"ssss", []int{1, 4}},
	} {
		up := make([]redcon.Command, len(tc.run))
		spans := make([]span, len(tc.run))
		for i, ch := range tc.run {
			switch ch {
			case 's':
				spans[i].script = true
			case 'S':
				up[i].Args = [][]byte{[]byte("script"), []byte("flush")}
			default:
				up[i].Args = [][]byte{[]byte("GET"), []byte("k")}
			}
		}
		if got := requestEnds(nil, up, spans); !slices.Equal(got, tc.want) {
			t.Errorf("%s: requests end at %v, want %v", tc.run, got, tc.want)
		}
	}
}
