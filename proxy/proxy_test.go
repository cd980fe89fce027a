package proxy

import (
	"errors"
	"io"
	"testing"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

func TestPassthroughBasics(t *testing.T) {
	up := redistest.Start(t)
	p := startProxy(t, up)
	c := dialRaw(t, p.Addr().String())
	tests := []struct{ cmd, want string }{
		{"PING", "+PONG\r\n"},
		{"SET k v", "+OK\r\n"},
		{"GET k", "$1\r\nv\r\n"},
		{"GET nokey", "$-1\r\n"},
		{"SELECT 3", "+OK\r\n"},
		{"GET k", "$-1\r\n"},
		{"SELECT 99999", "-ERR DB index is out of range\r\n"},
		{"SELECT x", "-ERR value is not an integer or out of range\r\n"},
		{"SELECT 0", "+OK\r\n"},
		{"GET k", "$1\r\nv\r\n"},
		{"CLIENT GETNAME", "$-1\r\n"},
		{"CLIENT SETNAME app1", "+OK\r\n"},
		{"CLIENT GETNAME", "$4\r\napp1\r\n"},
		{"EXEC", "-ERR EXEC without MULTI\r\n"},
		{"RESET", "+RESET\r\n"},
		{"CLIENT GETNAME", "$-1\r\n"},
	}
	for _, tc := range tests {
		if got := c.do(words(tc.cmd)...); got != tc.want {
			t.Errorf("%s: got %q want %q", tc.cmd, got, tc.want)
		}
	}
	if got := c.do("QUIT"); got != "+OK\r\n" {
		t.Errorf("QUIT: got %q", got)
	}
	if rest, err := c.readAllUntilClose(2e9); len(rest) != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("after QUIT: %q %v, want EOF", rest, err)
	}
}
