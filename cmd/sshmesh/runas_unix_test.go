//go:build unix

package main

import (
	"os"
	"os/exec"
	"syscall"
)

// runAs makes cmd run as uid:gid (with no supplementary groups).
func runAs(cmd *exec.Cmd, uid, gid int) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
}

// fileOwner returns the uid and gid that own a file.
func fileOwner(fi os.FileInfo) (uid, gid int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}
