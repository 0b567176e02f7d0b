//go:build linux

package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// requireRoot skips tests that create users when not root, except in CI,
// where they must run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root to create users and switch to them; CI must run it as root")
	}
	t.Skip("needs root to create users and switch to them (CI runs it as root)")
}

// requireBinary skips (or fails under CI) when path does not exist.
func requireBinary(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	msg := path + " is missing; install the Debian package " + pkg
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg) // by hand only: under CI=true the missing part fails above
}

func randomSuffix(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func runRoot(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// testUser is a real local user with a home, bash, and one supplementary
// group, removed when the test ends.
func testUser(t *testing.T) *User {
	t.Helper()
	requireRoot(t)
	sfx := randomSuffix(t)
	name, group := "sshmesh-t"+sfx, "sshmesh-g"+sfx
	runRoot(t, "groupadd", group)
	t.Cleanup(func() { _ = exec.Command("groupdel", group).Run() })
	runRoot(t, "useradd", "-m", "-s", "/bin/bash", "-G", group, name)
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", "-r", name).CombinedOutput(); err != nil {
			t.Logf("userdel -r %s: %v %s", name, err, out)
		}
	})
	u, err := LookupUser(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// syncBuffer is a bytes.Buffer safe for one writer and polling readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls until b contains sub.
func (s *syncBuffer) waitFor(t *testing.T, sub string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.String(), sub) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q in output %q", sub, s.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
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
	return cfg
}

type result struct {
	stdout, stderr string
	exit           Exit
}

// run starts r with cfg and waits for it, failing the test after 30s.
func run(t *testing.T, cfg config, r Request) result {
	t.Helper()
	var out, errOut syncBuffer
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
