package proxy

import (
	"net"
	"testing"
)

func TestLoopback(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"127.0.0.1", true}, {"::1", true}, {"::ffff:127.0.0.1", true},
		{"127.0.0.2", false}, {"10.0.0.1", false}, {"::2", false},
	} {
		if got := loopback(&net.TCPAddr{IP: net.ParseIP(tc.ip), Port: 1}); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.ip, got, tc.want)
		}
	}
	if loopback(&net.UnixAddr{Name: "/tmp/x"}) {
		t.Error("a unix address is not a TCP loopback client")
	}
}

func TestHelloHasAuth(t *testing.T) {
	args := func(s ...string) [][]byte {
		out := make([][]byte, len(s))
		for i, a := range s {
			out[i] = []byte(a)
		}
		return out
	}
	for _, tc := range []struct {
		args [][]byte
		want bool
	}{
		{args("HELLO"), false},
		{args("HELLO", "3"), false},
		{args("HELLO", "3", "AUTH", "default", "pw"), true},
		{args("HELLO", "3", "SETNAME", "x", "auth", "u", "p"), true},
		{args("HELLO", "3", "AUTH", "default"), true}, // malformed: Redis answers its syntax error
		{args("HELLO", "AUTH", "u", "p"), false},      // AUTH in the protocol's place
	} {
		if got := helloHasAuth(tc.args); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.args, got, tc.want)
		}
	}
}
