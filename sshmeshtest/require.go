package sshmeshtest

import (
	"testing"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// NeedRoot skips tb when not running as root, or fails it under CI=true,
// where a test must never skip for a missing part.
func NeedRoot(tb testing.TB) {
	tb.Helper()
	testkit.NeedRoot(tb)
}

// NeedBinary returns the path of the program name, skipping tb when it is
// missing, or failing it under CI=true. pkg is the Debian package with it.
func NeedBinary(tb testing.TB, name, pkg string) string {
	tb.Helper()
	return testkit.NeedBinary(tb, name, pkg)
}

// Missing skips tb because what is not installed, or fails it under
// CI=true. pkg is the Debian package that has it.
func Missing(tb testing.TB, what, pkg string) {
	tb.Helper()
	testkit.Missing(tb, what, pkg)
}
