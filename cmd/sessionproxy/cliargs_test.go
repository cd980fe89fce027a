package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestCLIArgs: version and help are answers, not failures; a stray argument is refused rather than
// ignored (it once started a server).
func TestCLIArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stdout (code 0) or stderr
	}{
		{[]string{"version"}, 0, "sessionproxy "},
		{[]string{"-version"}, 0, "sessionproxy "},
		{[]string{"-h"}, 0, "reindex|check"},
		{[]string{"bogus"}, 2, `unexpected argument "bogus"`},
		{[]string{"version", "x"}, 2, `unexpected argument "x"`},
		{[]string{"check", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"-nope"}, 2, "flag provided but not defined"},
	} {
		cmd := exec.Command(binPath, tc.args...)
		cmd.Env = proxyEnv()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		out := stderr.String()
		if tc.code == 0 {
			out = stdout.String()
		}
		if code != tc.code || !strings.Contains(out, tc.out) {
			t.Errorf("sessionproxy %v: exit %d, output %q; want exit %d with %q", tc.args, code, out, tc.code, tc.out)
		}
	}
}
