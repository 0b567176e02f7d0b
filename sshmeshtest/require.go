package sshmeshtest

import (
	"os"
	"os/exec"
	"testing"
)

// underCI reports whether the tests run under CI (CI=true), where a test
// must never skip for a missing part: .ci/run installs every part.
func underCI() bool { return os.Getenv("CI") == "true" }

// NeedRoot skips tb when not running as root, or fails it under CI=true.
func NeedRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if underCI() {
		tb.Fatal("this test needs root, and under CI=true it must not skip: run .ci/run as root")
	}
	tb.Skip("needs root (run as root, or via .ci/run; under CI=true this fails instead of skipping)")
}

// NeedBinary returns the path of the program name, skipping tb when it is
// missing, or failing it under CI=true. pkg is the Debian package with it.
func NeedBinary(tb testing.TB, name, pkg string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	Missing(tb, name, pkg)
	return ""
}

// Missing skips tb because what is not installed, or fails it under
// CI=true. pkg is the Debian package that has it.
func Missing(tb testing.TB, what, pkg string) {
	tb.Helper()
	if underCI() {
		tb.Fatalf("%s is not installed, and under CI=true the test must not skip: .ci/run must install %s", what, pkg)
	}
	tb.Skipf("%s not installed (apt-get install %s); under CI=true this fails instead of skipping", what, pkg)
}
