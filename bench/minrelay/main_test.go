//go:build linux

package main

import "testing"

func TestFraming(t *testing.T) {
	cmd := "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
	for _, tc := range []struct {
		in   string
		want int
	}{
		{cmd, len(cmd)},
		{cmd + "*1", len(cmd)},
		{cmd[:len(cmd)-1], -1},
		{"*2\r\n$3\r", -1},
		{"", -1},
		{"PING\r\n", -2},
		{"*1\r\n+x\r\n", -2},
	} {
		if got := commandEnd([]byte(tc.in), 0); got != tc.want {
			t.Errorf("commandEnd(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"+OK\r\n", 5},
		{"-ERR x\r\n:1\r\n", 8},
		{"$-1\r\n", 5},
		{"$3\r\nabc\r\n", 9},
		{"$3\r\nab", -1},
		{"*2\r\n$1\r\na\r\n$-1\r\n", 16},
		{"*2\r\n$1\r\na\r\n", -1},
		{"*-1\r\n", 5},
		{"%1\r\n", -2},
	} {
		if got := replyEnd([]byte(tc.in), 0); got != tc.want {
			t.Errorf("replyEnd(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
