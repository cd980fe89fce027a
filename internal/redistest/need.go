package redistest

import (
	"os"
	"os/exec"
	"testing"
)

// Need skips the test when a program it runs (redis-server, redis-cli, redis-benchmark...) is
// not on PATH, so `go test` works on a machine without Redis. Under CI (CI set, as .ci/run
// runs) a missing program fails the test instead: there a skip would pass a run that tested
// nothing.
func Need(t testing.TB, program string) {
	t.Helper()
	if _, err := exec.LookPath(program); err != nil {
		Missing(t, program+" not installed")
	}
}

// Missing skips the test for why, or fails it under CI (see Need).
func Missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: .ci/deps installs it)", why)
	}
	t.Skip(why)
}
