//go:build unix

// Package docs_test checks that the README's walkthrough works: it runs
// the README's marked shell blocks, exactly as written, with a freshly
// built sshmesh on PATH.
package docs_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// block is one shell block of the walkthrough.
type block struct {
	line     int  // of the opening fence, for messages
	needRoot bool // marked <!-- walkthrough root -->
	text     string
}

// walkthrough returns the ```sh blocks that directly follow a line
// "<!-- walkthrough -->" or "<!-- walkthrough root -->".
func walkthrough(t *testing.T, readme []byte) []block {
	t.Helper()
	var blocks []block
	sc := bufio.NewScanner(bytes.NewReader(readme))
	n, marker, in := 0, "", false
	var cur block
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case in && line == "```":
			blocks = append(blocks, cur)
			in = false
		case in:
			cur.text += line + "\n"
		case strings.HasPrefix(line, "<!-- walkthrough"):
			marker = line
		case marker != "" && line == "```sh":
			cur = block{line: n, needRoot: marker == "<!-- walkthrough root -->"}
			in, marker = true, ""
		case marker != "" && line != "":
			t.Fatalf("README.md:%d: %q must be followed by a ```sh block", n, marker)
		}
	}
	if in {
		t.Fatalf("README.md:%d: unclosed block", cur.line)
	}
	return blocks
}

// TestREADMEWalkthrough runs the walkthrough in a temp dir. As root it runs
// every block, the wg-quick one too, inside a new network namespace (so the
// WireGuard interface and UDP port 51820 never touch the host's network);
// otherwise the blocks that need no root, on the host's loopback.
func TestREADMEWalkthrough(t *testing.T) {
	for _, b := range []struct{ name, pkg string }{{"ssh", "openssh-client"}, {"ssh-keygen", "openssh-client"}} {
		sshmeshtest.NeedBinary(t, b.name, b.pkg)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := walkthrough(t, readme)
	if len(blocks) < 5 {
		t.Fatalf("found %d walkthrough blocks in README.md; want the 6 steps", len(blocks))
	}

	root := os.Geteuid() == 0
	// The server runs in the background (step 4); stop it when the script
	// ends, whether it succeeded or not.
	script := "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n"
	if root {
		for _, b := range []struct{ name, pkg string }{{"wg-quick", "wireguard-tools"}, {"wireguard-go", "wireguard-go"}, {"ip", "iproute2"}, {"unshare", "util-linux"}} {
			sshmeshtest.NeedBinary(t, b.name, b.pkg)
		}
		script += "ip link set lo up\n" // the namespace's loopback starts down
	}
	var skipped []int
	for _, b := range blocks {
		if b.needRoot && !root {
			skipped = append(skipped, b.line)
			continue
		}
		script += "# README.md:" + itoa(b.line) + "\n" + b.text
	}

	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "sshmesh"), "../cmd/sshmesh").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	work := filepath.Join(tmp, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	scriptPath := filepath.Join(tmp, "walkthrough.sh")
	if err := os.WriteFile(scriptPath, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}

	if root {
		// The walkthrough's serve keeps its state (the status socket) in
		// root's default state dir; what it made there goes when the test
		// ends (it is killed, so it cannot remove its socket itself).
		const state = "/var/lib/sshmesh"
		_, err := os.Stat(state)
		existed := err == nil
		_, err = os.Stat(filepath.Join(state, "control.sock"))
		sockExisted := err == nil
		t.Cleanup(func() {
			switch {
			case !existed:
				os.RemoveAll(state)
			case !sockExisted:
				os.Remove(filepath.Join(state, "control.sock"))
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var cmd *exec.Cmd
	if root {
		cmd = exec.CommandContext(ctx, "unshare", "--net", "bash", scriptPath)
	} else {
		cmd = exec.CommandContext(ctx, "bash", scriptPath)
	}
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	// Its own process group, killed as a whole on timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // anything left of the group
	log := out.String()
	if runErr != nil {
		t.Errorf("the walkthrough failed: %v\n%s", runErr, log)
	}
	for _, want := range []string{"hello from ", "hello by name, host key vouched for by the mesh", "hello again, over wg-quick"} {
		if want == "hello again, over wg-quick" && !root {
			continue
		}
		if !strings.Contains(log, want) {
			t.Errorf("no %q in the walkthrough's output:\n%s", want, log)
		}
	}
	if len(skipped) > 0 {
		t.Logf("README.md blocks at lines %v need root and did not run", skipped)
		sshmeshtest.NeedRoot(t)
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("script:\n%s\noutput:\n%s", script, log)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
