// Package testkit holds what the module's tests share: the skip-or-fail
// rule for missing parts, test users, a locked buffer and wg-quick files.
//
// It imports only the standard library and meshkey, so the tests of every
// package, netstack's and session's in-package tests included, can use it
// without an import cycle. Package sshmeshtest exports the parts a user of
// the library needs (NeedRoot, NeedBinary, Missing, Buffer) as thin
// wrappers around these.
//
// # Skip or fail
//
// A test that needs something the machine may lack (root, a program, a
// kernel feature) skips with the reason when run by hand, and fails under
// CI=true, where .ci/run installs every part and runs as root: there a skip
// would hide a test that never ran.
package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// UnderCI reports whether the tests run under CI (CI=true), where a test
// must never skip for a missing part.
func UnderCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips tb, saying why, or fails it under CI=true.
func SkipOrFail(tb testing.TB, why string) {
	tb.Helper()
	if UnderCI() {
		tb.Fatalf("%s, and under CI=true the test must not skip: .ci/run installs every part and runs as root", why)
	}
	tb.Skipf("%s; skipped outside CI (under CI=true this fails)", why)
}

// NeedRoot skips tb when not running as root, or fails it under CI=true.
func NeedRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(tb, "needs root (run as root, or via .ci/run)")
	}
}

// NeedBinary returns the path of the program name (a name looked up in
// PATH, or a path), skipping tb when it is missing, or failing it under
// CI=true. pkg is the Debian package that has it.
func NeedBinary(tb testing.TB, name, pkg string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(tb, name, pkg)
	}
	return p
}

// Missing skips tb because what is not installed, or fails it under
// CI=true. pkg is the Debian package that has it.
func Missing(tb testing.TB, what, pkg string) {
	tb.Helper()
	SkipOrFail(tb, fmt.Sprintf("%s is not installed (apt-get install %s)", what, pkg))
}
