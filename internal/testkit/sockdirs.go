package testkit

import (
	"os"
	"path/filepath"
	"testing"
)

// SocketDirs makes a directory under /tmp (removed when the test ends),
// which every user may search, holding two directories every user may
// write, open and denied, for tests of Unix sockets reached as another
// user (a test then denies denied to that user with an ACL). /tmp, not the
// test's temp dir: the server's socket rules allow the user's home, /tmp
// and /run/user.
func SocketDirs(tb testing.TB, prefix string) (dir, open, denied string) {
	tb.Helper()
	dir, err := os.MkdirTemp("/tmp", prefix)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	open, denied = filepath.Join(dir, "open"), filepath.Join(dir, "denied")
	for _, d := range []string{open, denied} {
		if err := os.Mkdir(d, 0o777); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil { // past the umask
			tb.Fatal(err)
		}
	}
	return dir, open, denied
}
