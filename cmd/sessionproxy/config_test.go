package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runBinary runs the sessionproxy binary with args and env (on top of a clean environment) and
// returns its exit code, stdout and stderr.
func runBinary(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = proxyEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("sessionproxy %q did not exit within 10s", args)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("sessionproxy %q: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string
		env  []string
		want []string // in stderr; empty: the file is valid
		args []string // flags after -check-config FILE
	}{
		{"good", "testdata/config/good.yaml", nil, nil, nil},
		{"pool_size", "testdata/config/bad_pool_size.yaml", nil,
			[]string{"upstream.pool_size: must be >= 1, got 0"}, nil},
		{"every_bad_field", "testdata/config/bad_limits.yaml", nil,
			[]string{"limits.max_clients: must be >= 1, got 0", "limits.max_bulk_len: must be <= 4GiB, got 5GiB"}, nil},
		// Decode errors point at the file and line (the field is not named there).
		{"bad_duration", "testdata/config/bad_duration.yaml", nil,
			[]string{"testdata/config/bad_duration.yaml", `line 2: invalid duration "soon"`}, nil},
		{"unknown_field", "testdata/config/unknown_field.yaml", nil,
			[]string{"testdata/config/unknown_field.yaml", "field adress not found"}, nil},
		{"missing_file", "testdata/config/missing.yaml", nil, []string{"testdata/config/missing.yaml"}, nil},
		// The environment is checked with the file.
		{"bad_env", "testdata/config/good.yaml", []string{"SESSIONPROXY_LIMITS_MAX_CLIENTS=0"},
			[]string{"limits.max_clients: must be >= 1, got 0"}, nil},
		{"bad_env_value", "testdata/config/good.yaml", []string{"SESSIONPROXY_UPSTREAM_POOL_SIZE=lots"},
			[]string{"SESSIONPROXY_UPSTREAM_POOL_SIZE"}, nil},
		// A flag given empty overrides (here into an invalid value), like an empty variable.
		{"empty_listen_flag", "testdata/config/good.yaml", nil,
			[]string{`listen: want host:port, got ""`}, []string{"-listen", ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runBinary(t, tc.env, append([]string{"-check-config", tc.file}, tc.args...)...)
			if tc.want == nil {
				if code != 0 || stdout != tc.file+": ok\n" {
					t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, tc.file+": ok\n")
				}
				return
			}
			if code == 0 {
				t.Fatalf("exit 0 for a bad config; stdout %q", stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestPrintDefaultConfig: the printed default config passes -check-config, and the process
// exits 0 without listening anywhere.
func TestPrintDefaultConfig(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runBinary(t, nil, "-print-default-config")
	if code != 0 || stdout == "" {
		t.Fatalf("-print-default-config: exit %d, %d bytes, stderr %q", code, len(stdout), stderr)
	}
	for _, key := range []string{"listen:", "upstream:", "limits:", "max_bulk_len:", "shutdown_timeout:"} {
		if !strings.Contains(stdout, key) {
			t.Errorf("default config lacks %q", key)
		}
	}
	path := filepath.Join(t.TempDir(), "default.yaml")
	if err := os.WriteFile(path, []byte(stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runBinary(t, nil, "-check-config", path)
	if code != 0 || out != path+": ok\n" {
		t.Fatalf("-check-config of the default: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// TestBadFlags: an unknown flag exits 2 with usage on stderr.
func TestBadFlags(t *testing.T) {
	t.Parallel()
	code, _, stderr := runBinary(t, nil, "-no-such-flag")
	if code != 2 || !strings.Contains(stderr, "-no-such-flag") {
		t.Fatalf("exit %d, stderr %q; want 2 naming the flag", code, stderr)
	}
}
