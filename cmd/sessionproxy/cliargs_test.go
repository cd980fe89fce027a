package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
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

// TestRepairRefusesOtherRules: reindex and check refuse to run with rules other than those the
// running proxy stored at start (they would build a second index beside its own), unless
// -force; with the proxy's rules they run.
func TestRepairRefusesOtherRules(t *testing.T) {
	up := redistest.Start(t)
	startProxy(t, up.Addr()) // the default rules; stores their fingerprint
	other := filepath.Join(t.TempDir(), "other.yaml")
	if err := os.WriteFile(other, []byte("index:\n  rules:\n    - name: s\n      pattern: \"session:*\"\n      layout: zset\n      index_key: \"z:{uid}\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"reindex", "-upstream", up.Addr(), "-config", other}, 2, "the running proxy keeps its index with other rules"},
		{[]string{"check", "-upstream", up.Addr(), "-config", other, "-force"}, 0, "scanned="},
		{[]string{"check", "-upstream", up.Addr()}, 0, "scanned="},
	} {
		cmd := exec.Command(binPath, tc.args...)
		cmd.Env = proxyEnv()
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(string(out), tc.out) {
			t.Errorf("sessionproxy %v: exit %d, %q; want exit %d with %q", tc.args, code, out, tc.code, tc.out)
		}
	}
	if got, err := up.DoText("EXISTS", "z:1"); err != nil || got != "0" {
		t.Errorf("the refused reindex wrote anyway: %q %v", got, err)
	}
}

// TestRepairAllDBs: -all-dbs checks and repairs every DB Redis has, a line per DB and rule.
func TestRepairAllDBs(t *testing.T) {
	up := redistest.Start(t)
	c := dialRESP(t, up.Addr())
	c.do("SELECT", "3")
	c.do("HSET", "session:db3", "userid", "9") // behind any proxy's back: not indexed
	run := func(args ...string) (string, int) {
		cmd := exec.Command(binPath, args...)
		cmd.Env = proxyEnv()
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		return string(out), 0
	}
	out, code := run("check", "-upstream", up.Addr(), "-all-dbs")
	if code != 3 || strings.Count(out, "\n") != 16 || !strings.Contains(out, "db=3 rule=session scanned=1 missing=1") {
		t.Fatalf("check -all-dbs: exit %d\n%s", code, out)
	}
	if out, code = run("reindex", "-upstream", up.Addr(), "-all-dbs"); code != 0 {
		t.Fatalf("reindex -all-dbs: exit %d\n%s", code, out)
	}
	if out, code = run("check", "-upstream", up.Addr(), "-all-dbs"); code != 0 {
		t.Errorf("check after the reindex: exit %d\n%s", code, out)
	}
}
