//go:build linux

package session

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// testUser is a real local user with a home, bash, and one supplementary
// group, removed when the test ends.
func testUser(t *testing.T) *User {
	t.Helper()
	u, err := LookupUser(testkit.NewUser(t, testkit.UserOptions{Group: true}).Name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// testConfig is the system config with login records and motd in a
// temporary directory, so tests leave the host's files alone.
func testConfig(t *testing.T) config {
	dir := t.TempDir()
	cfg := systemConfig()
	cfg.records = loginRecords{utmp: dir + "/utmp", wtmp: dir + "/wtmp"}
	if err := os.WriteFile(cfg.records.wtmp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.motd = dir + "/motd"
	cfg.sshrc = "" // not the host's /etc/ssh/sshrc
	cfg.lastlog = dir + "/lastlog"
	if err := os.WriteFile(cfg.lastlog, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

type result struct {
	stdout, stderr string
	exit           Exit
}

// run starts r with cfg and waits for it, failing the test after 30s.
func run(t *testing.T, cfg config, r Request) result {
	t.Helper()
	var out, errOut testkit.Buffer
	if r.Stdout == nil {
		r.Stdout = &out
	}
	if r.Stderr == nil {
		r.Stderr = &errOut
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := start(ctx, r, cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	exit, err := p.Wait()
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("session timed out; output %q %q", out.String(), errOut.String())
	}
	return result{out.String(), errOut.String(), exit}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// command runs a command as the test process and returns its output.
func command(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// childFds maps the fd numbers of pid to their targets.
func childFds(t *testing.T, pid int) map[string]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]string{}
	for _, e := range ents {
		fds[e.Name()], _ = os.Readlink(dir + "/" + e.Name())
	}
	return fds
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
