package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestReload: PROXY RELOAD and SIGHUP re-read the config file. A change to a live setting
// takes effect for clients already connected (max_clients, the idle timeout); a change to one
// that needs a restart, or a file that does not validate, is refused with every reason and
// changes nothing; no client connection is dropped by a reload.
func TestReload(t *testing.T) {
	up := redistest.Start(t)
	path := filepath.Join(t.TempDir(), "sessionproxy.yaml")
	write := func(yaml string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("limits:\n  max_clients: 100\n")
	p := startProxyArgs(t, up.Addr(), []string{"-config", path})
	admin := dialRESP(t, p.Addr)
	if got := admin.do("PROXY", "RELOAD"); got != "$26\r\nreloaded; changed: nothing\r\n" {
		t.Fatalf("an unchanged file: %q", got)
	}

	// Live: max_clients down to 2 (the admin connection is one of them), an idle timeout.
	write("limits:\n  max_clients: 2\nclients:\n  timeout: 1s\nlog_level: debug\n")
	if got := admin.do("PROXY", "RELOAD"); !strings.Contains(got, "changed: log_level, clients.timeout, limits.max_clients") {
		t.Fatalf("a live change: %q", got)
	}
	second := dialRESP(t, p.Addr)
	second.do("PING")
	third := dialRESP(t, p.Addr)
	third.send(encode("PING"))
	if got, _ := third.reply(2 * time.Second); got != "-ERR max number of clients reached\r\n" {
		t.Errorf("a third client past the reloaded max_clients: %q", got)
	}
	second.expectClosed(4 * time.Second) // the reloaded idle timeout applies to it

	// Needs a restart: refused, nothing changes (the idle timeout stays 1s).
	write("limits:\n  max_clients: 100\nclients:\n  timeout: 0s\nordering: none\nindex:\n  prefix: \"other:\"\n")
	admin = dialRESP(t, p.Addr)
	if got := admin.do("PROXY", "RELOAD"); !strings.HasPrefix(got, "-ERR config not reloaded: these settings need a restart: ordering, index.prefix") {
		t.Errorf("a change that needs a restart: %q", got)
	}
	write("limits:\n  max_clients: 0\nlog_level: loud\n")
	if got := admin.do("PROXY", "RELOAD"); !strings.Contains(got, "limits.max_clients") || !strings.Contains(got, "log_level") {
		t.Errorf("an invalid file: %q", got)
	}

	// SIGHUP does the same, and logs it.
	write("limits:\n  max_clients: 100\nclients:\n  timeout: 0s\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return strings.Contains(p.stderr.String(), "SIGHUP: config reloaded") }) {
		t.Fatalf("no reload logged after SIGHUP:\n%s", p.stderr.String())
	}
	time.Sleep(2500 * time.Millisecond)
	if got := admin.do("PING"); got != "+PONG\r\n" {
		t.Errorf("an idle client after the timeout was reloaded away: %q", got)
	}
	// PROXY CONFIG GET shows the running settings (the reloaded ones), secrets only as set.
	got := admin.do("PROXY", "CONFIG", "GET", "limits.max_c*")
	if got != "*2\r\n$18\r\nlimits.max_clients\r\n$3\r\n100\r\n" {
		t.Errorf("PROXY CONFIG GET limits.max_c*: %q", got)
	}
	if got := admin.do("PROXY", "CONFIG", "GET", "clients.password"); got != "*2\r\n$16\r\nclients.password\r\n$0\r\n\r\n" {
		t.Errorf("PROXY CONFIG GET clients.password (unset): %q", got)
	}
	for _, want := range []string{"# Proxy\r\n", "upstream_state:up\r\n", "reaper_leading:1\r\n", "reaper_notifications:1\r\n",
		"reaper_ledger_entries:"} {
		if got := admin.do("PROXY", "INFO"); !strings.Contains(got, want) {
			t.Errorf("PROXY INFO lacks %q: %q", want, got)
		}
	}
}
