//go:build unix

package main

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// checkPrivateDir reports why fi (from Lstat) is not a directory that only
// this user can enter.
func checkPrivateDir(fi fs.FileInfo) error {
	if !fi.IsDir() {
		return errors.New("not a directory")
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) != os.Getuid() {
		return errors.New("not owned by this user")
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return errors.New("open to other users (want mode 0700)")
	}
	return nil
}
