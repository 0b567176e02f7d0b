// Package exampletest holds what the examples' tests share: wg-quick files
// for sshmeshtest nodes, building a program, and a log buffer to wait on.
package exampletest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// WriteWGConf writes n's config as a wg-quick file dir/name and returns its
// path. Close n first when a program is to run the node from the file.
func WriteWGConf(tb testing.TB, dir, name string, n *sshmeshtest.Node) string {
	tb.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[Interface]\nPrivateKey = %s\nAddress = %s/32\nListenPort = %d\n", n.Key.Base64(), n.Addr, n.Config.ListenPort)
	for _, p := range n.Config.Peers {
		fmt.Fprintf(&b, "\n[Peer]\nPublicKey = %s\nAllowedIPs = %s\nEndpoint = %s\n", p.PublicKey, p.AllowedIPs[0], p.Endpoint)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

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
