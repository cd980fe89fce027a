package main

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// The binary re-executes itself with the runtime's monitor thread kept awake (sysmon_linux.go),
// keeping the caller's GODEBUG settings, and leaves an explicit schedtrace alone.
func TestSysmonAwake(t *testing.T) {
	t.Setenv("GODEBUG", "") // whatever the test run has; each case's own value comes after it
	srv := redistest.Start(t)
	for _, tc := range []struct{ env, want string }{
		{"", "GODEBUG=" + sysmonAwake},
		{"GODEBUG=madvdontneed=1", "GODEBUG=madvdontneed=1," + sysmonAwake},
		{"GODEBUG=schedtrace=0", "GODEBUG=schedtrace=0"},
	} {
		var env []string
		if tc.env != "" {
			env = append(env, tc.env)
		}
		p := startProxy(t, srv.Addr(), env...)
		// The serving process is the one started (exec keeps the PID), with the new environment.
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/environ")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, kv := range strings.Split(string(raw), "\x00") {
			if strings.HasPrefix(kv, "GODEBUG=") {
				got = append(got, kv)
			}
		}
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("env %q: serving process has %q, want [%q]", tc.env, got, tc.want)
		}
		if strings.Contains(p.stderr.String(), "SCHED ") {
			t.Errorf("env %q: the runtime printed a scheduler trace:\n%s", tc.env, p.stderr.String())
		}
		p.stop()
	}
}
