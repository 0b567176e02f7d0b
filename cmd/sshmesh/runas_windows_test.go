package main

import (
	"os"
	"os/exec"
)

// runAs cannot change a Windows process's user; the tests that call it
// need root on Linux and skip before they get here.
func runAs(cmd *exec.Cmd, uid, gid int) {
	panic("runAs: not on Windows")
}

// fileOwner has no uid or gid to give on Windows.
func fileOwner(fi os.FileInfo) (uid, gid int) {
	panic("fileOwner: not on Windows")
}
