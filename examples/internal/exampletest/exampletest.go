// Package exampletest holds what the examples' tests share: building a
// program, running one, its wg-quick and policy files, and the options of
// the stock OpenSSH clients that reach it through `sshmesh nc`. (A log
// buffer to wait on is sshmeshtest.Buffer.)
package exampletest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// Build builds the main package in pkgDir (relative to the test's package)
// into dir and returns the binary's path.
func Build(dir, pkgDir, name string) (string, error) {
	bin := filepath.Join(dir, name)
	out, err := exec.Command("go", "build", "-o", bin, pkgDir).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkgDir, err, out)
	}
	return bin, nil
}

// MainWithSSHMesh is the body of a TestMain whose tests drive a program
// with the stock OpenSSH clients: it builds cmd/sshmesh (their
// ProxyCommand is `sshmesh nc`) into a temporary directory, sets *bin to
// its path, runs the tests and exits with their status.
func MainWithSSHMesh(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "sshmesh-example-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin, err = Build(dir, "../../cmd/sshmesh", "sshmesh")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// SSHOptions are the options of a stock ssh or sftp client that reaches a
// mesh address through `sshmesh nc --wg conf`, with no config file, no
// agent, and any host key trusted.
func SSHOptions(sshmesh, conf string) []string {
	return []string{"-F", "/dev/null", "-o", "ProxyCommand=" + sshmesh + " nc --wg " + conf + " %h %p",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "ConnectTimeout=20", "-o", "IdentityAgent=none"}
}

// WGQuickFiles closes the nodes of m (the program under test and `sshmesh
// nc` run them from their files) and writes node i's wg-quick file to dir
// as names[i], returning the paths.
func WGQuickFiles(tb testing.TB, m *sshmeshtest.Mesh, dir string, names ...string) []string {
	tb.Helper()
	confs := make([]string, len(names))
	for i, name := range names {
		m.Nodes[i].Node.Close()
		confs[i] = m.Nodes[i].WriteWGQuick(tb, filepath.Join(dir, name))
	}
	return confs
}

// Policy copies the policy file src into dir with its placeholder keys
// replaced by the test mesh's, and returns the copy's path. The examples'
// policy files name their nodes with the same three placeholder keys: the
// first (the server's) becomes nodes[0]'s, the second nodes[1]'s, and so on.
func Policy(tb testing.TB, src, dir string, nodes ...*sshmeshtest.Node) string {
	tb.Helper()
	pol, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	// The keys the examples' policy files use for their nodes.
	placeholders := [...]string{
		"6AI/wk2T0LjHVPjdMfftbUcKD2Sez0m0LrkIRxwASg8=",
		"qAeadUOsvcSIyg0pgZECo18hTH/g0GAxOyjU9ff7C0U=",
		"LjkcA7kxzgdgqBv1w+G8RF3Oa4N7oJINpeE4ctQsFiY=",
	}
	var oldnew []string
	for i, n := range nodes {
		oldnew = append(oldnew, placeholders[i], n.Key.Public().String())
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(dst, []byte(strings.NewReplacer(oldnew...).Replace(string(pol))), 0o600); err != nil {
		tb.Fatal(err)
	}
	return dst
}

// Run runs a program's run function in the test's process until the test
// ends, then cancels its context; an error it returns fails the test. Its
// log goes to the returned buffer, shown when the test failed. Run returns
// once the log holds ready.
func Run(tb testing.TB, ready string, run func(context.Context, *slog.Logger) error) *sshmeshtest.Buffer {
	tb.Helper()
	log := new(sshmeshtest.Buffer)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, slog.New(slog.NewTextHandler(log, nil))) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("run: %v", err)
		}
		if tb.Failed() {
			tb.Logf("log:\n%s", log.String())
		}
	})
	log.WaitFor(tb, ready)
	return log
}
