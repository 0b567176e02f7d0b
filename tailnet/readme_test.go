//go:build unix

package tailnet_test

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

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// TestREADMETailnetWalkthrough runs the README's "When you outgrow files"
// steps (the ```sh blocks after "<!-- tailnet walkthrough -->"), exactly as
// written, in a network namespace of their own (so its fixed loopback
// ports never meet the host's), with headscale, tailscaled, tailscale,
// sshmesh and sshmesh-tailnet on PATH.
func TestREADMETailnetWalkthrough(t *testing.T) {
	tl := needTools(t)
	testkit.NeedRoot(t)
	testkit.NeedBinary(t, "unshare", "util-linux")
	testkit.NeedBinary(t, "ssh", "openssh-client")
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	// The namespace's loopback starts down; and a Tailscale node sees a
	// host with loopback alone as offline and does not dial its
	// coordinator, so a veth pair (both ends inside, a default route, no
	// way out) stands in for the host's network.
	script.WriteString("set -euo pipefail\nip link set lo up\n" +
		"ip link add sshmesh-v0 type veth peer name sshmesh-v1\nip addr add 10.99.0.1/24 dev sshmesh-v0\n" +
		"ip link set sshmesh-v0 up\nip link set sshmesh-v1 up\nip route add default via 10.99.0.2 dev sshmesh-v0\n" +
		"trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n")
	sc := bufio.NewScanner(bytes.NewReader(readme))
	n, marked, in, blocks := 0, false, false, 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case in && line == "```":
			in = false
		case in:
			script.WriteString(line + "\n")
		case line == "<!-- tailnet walkthrough -->":
			marked = true
		case marked && line == "```sh":
			script.WriteString("# README.md:" + strconv.Itoa(n) + "\n")
			in, marked, blocks = true, false, blocks+1
		case marked && line != "":
			t.Fatalf("README.md:%d: the tailnet walkthrough marker must be followed by a ```sh block", n)
		}
	}
	if blocks < 5 {
		t.Fatalf("found %d tailnet walkthrough blocks in README.md; want 5", blocks)
	}

	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	for pkg, name := range map[string]string{"../cmd/sshmesh": "sshmesh", "./cmd/sshmesh-tailnet": "sshmesh-tailnet"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	for _, p := range []string{tl.headscale, tl.tailscaled, tl.tailscale} {
		if err := os.Symlink(p, filepath.Join(bin, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	work := filepath.Join(tmp, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	scriptPath := filepath.Join(tmp, "walkthrough.sh")
	if err := os.WriteFile(scriptPath, []byte(script.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "bash", scriptPath)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "HOME="+work)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // whatever the script left
	if err != nil {
		logs := ""
		for _, f := range []string{"serve.log", "ts.log", "hs/log"} {
			b, _ := os.ReadFile(filepath.Join(work, f))
			logs += "\n== " + f + ":\n" + string(tail(b, 3000))
		}
		t.Fatalf("walkthrough: %v\n%s%s", err, out, logs)
	}
	if !strings.Contains(string(out), "hello from ") {
		t.Fatalf("walkthrough: the ssh login printed nothing:\n%s", out)
	}
}
