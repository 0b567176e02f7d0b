// Package exampletest holds what the examples' tests share: building a
// program. (A node's wg-quick file is sshmeshtest.Node.WriteWGQuick; a log
// buffer to wait on is sshmeshtest.Buffer.)
package exampletest

import (
	"fmt"
	"os/exec"
	"path/filepath"
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
