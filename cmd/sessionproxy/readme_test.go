package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
	"github.com/sessionproxy/sessionproxy/internal/syncbuf"
)

// TestReadmeTranscripts runs the README's transcripts as written: "Moving an app onto the proxy"
// and "The three layouts, by example". In each, the YAML block becomes sessionproxy.yaml, and
// every "$ " line of its console blocks runs in bash (a line ending in " &" in the background,
// until the section is done: it must be the proxy, whose port is awaited), with output compared line by line with the transcript ("..."
// matches anything within a line). Only the ports change: Redis' 6379 and the proxy's 6380 become
// free ones, and redis-cli gets --no-raw so that it prints what it prints on a terminal.
func TestReadmeTranscripts(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, heading := range []string{"## Moving an app onto the proxy", "### The three layouts, by example"} {
		t.Run(strings.TrimLeft(heading, "# "), func(t *testing.T) {
			runTranscript(t, readmeSection(t, string(readme), heading))
		})
	}
}

// runTranscript runs one README section's transcript against a Redis of its own.
func runTranscript(t *testing.T, section string) {
	yamls, consoles := fencedBlocks(section, "yaml"), fencedBlocks(section, "console")
	if len(yamls) != 1 || len(consoles) == 0 {
		t.Fatalf("section has %d yaml and %d console blocks, want 1 and some", len(yamls), len(consoles))
	}

	up := redistest.Start(t)
	proxyPort := strconv.Itoa(redistest.FreePort(t))
	metricsPort := strconv.Itoa(redistest.FreePort(t))
	ports := strings.NewReplacer(
		"127.0.0.1:6379", up.Addr(), "-p 6379", "-p "+strconv.Itoa(up.Port),
		"127.0.0.1:6380", "127.0.0.1:"+proxyPort, "-p 6380", "-p "+proxyPort,
		"redis-cli ", "redis-cli --no-raw ")
	dir := t.TempDir()
	// The example leaves the metrics listener at its default: on a free port here.
	conf := ports.Replace(yamls[0]) + "metrics: 127.0.0.1:" + metricsPort + "\n"
	if err := os.WriteFile(filepath.Join(dir, "sessionproxy.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+filepath.Dir(binPath)+string(os.PathListSeparator)+os.Getenv("PATH"))

	for _, block := range consoles {
		for _, st := range transcriptSteps(block) {
			line := ports.Replace(st.cmd)
			if bg, ok := strings.CutSuffix(line, " &"); ok {
				cmd := exec.Command("bash", "-c", "exec "+bg)
				cmd.Dir, cmd.Env = dir, env
				var out syncbuf.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				t.Cleanup(func() {
					if t.Failed() {
						t.Logf("%s:\n%s", st.cmd, out.String())
					}
				})
				if err := cmd.Start(); err != nil {
					t.Fatalf("%s: %v", st.cmd, err)
				}
				t.Cleanup(func() {
					_ = cmd.Process.Signal(syscall.SIGTERM)
					done := make(chan struct{})
					go func() { _ = cmd.Wait(); close(done) }()
					select {
					case <-done:
					case <-time.After(10 * time.Second):
						_ = cmd.Process.Kill()
					}
				})
				waitPort(t, "127.0.0.1:"+proxyPort)
				continue
			}
			cmd := exec.Command("bash", "-c", line)
			cmd.Dir, cmd.Env = dir, env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", st.cmd, err, out)
			}
			got := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
			if len(st.want) == 0 && strings.TrimSpace(string(out)) == "" {
				continue
			}
			if len(got) != len(st.want) {
				t.Fatalf("%s:\ngot  %q\nwant %q", st.cmd, got, st.want)
			}
			for i := range got {
				if !transcriptLine(st.want[i]).MatchString(got[i]) {
					t.Fatalf("%s: line %d\ngot  %q\nwant %q", st.cmd, i+1, got[i], st.want[i])
				}
			}
		}
	}
}

// readmeSection is the text under heading up to the next heading of its level or above.
func readmeSection(t *testing.T, doc, heading string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no %q", heading)
	}
	rest := doc[i+len(heading)+2:]
	level := strings.Index(heading, " ") // the number of '#'
	for off := 0; ; {
		j := strings.Index(rest[off:], "\n#")
		if j < 0 {
			return rest
		}
		j += off
		if k := strings.Index(rest[j+1:], " "); k > 0 && k <= level && strings.Trim(rest[j+1:j+1+k], "#") == "" {
			return rest[:j]
		}
		off = j + 1
	}
}

// fencedBlocks returns the bodies of the ```lang blocks of text.
func fencedBlocks(text, lang string) []string {
	var blocks []string
	for {
		i := strings.Index(text, "```"+lang+"\n")
		if i < 0 {
			return blocks
		}
		text = text[i+len(lang)+4:]
		j := strings.Index(text, "```")
		if j < 0 {
			return blocks
		}
		blocks = append(blocks, text[:j])
		text = text[j+3:]
	}
}

type transcriptStep struct {
	cmd  string
	want []string
}

// transcriptSteps splits a console block into commands ("$ ...") and the lines each prints.
func transcriptSteps(block string) []transcriptStep {
	var steps []transcriptStep
	for _, line := range strings.Split(strings.TrimRight(block, "\n"), "\n") {
		if cmd, ok := strings.CutPrefix(line, "$ "); ok {
			steps = append(steps, transcriptStep{cmd: cmd})
		} else if len(steps) > 0 {
			steps[len(steps)-1].want = append(steps[len(steps)-1].want, line)
		}
	}
	return steps
}

// transcriptLine matches a transcript's output line, "..." standing for anything.
func transcriptLine(want string) *regexp.Regexp {
	parts := strings.Split(want, "...")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// waitPort waits until addr accepts connections.
func waitPort(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never accepted: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
