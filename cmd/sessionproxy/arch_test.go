package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestArchImportDirection keeps the layout's import rules checkable: cmd -> everything;
// proxy -> rewrite; reaper -> rewrite; rewrite and conf import no project package; proxy and
// reaper never import each other; only cmd turns conf.Config into options.
func TestArchImportDirection(t *testing.T) {
	const mod = "github.com/sessionproxy/sessionproxy/"
	forbidden := map[string][]string{
		"rewrite": {"conf", "proxy", "reaper", "cmd"},
		"conf":    {"rewrite", "proxy", "reaper", "cmd", "internal"},
		"proxy":   {"conf", "reaper", "cmd"},
		"reaper":  {"conf", "proxy", "cmd"},
	}
	for pkg, bad := range forbidden {
		out, err := exec.Command("go", "list", "-deps", "-test", mod+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			rel, ok := strings.CutPrefix(dep, mod)
			if !ok {
				continue
			}
			for _, b := range bad {
				if rel == b || strings.HasPrefix(rel, b+"/") {
					t.Errorf("%s depends on %s", pkg, rel)
				}
			}
		}
	}
}
