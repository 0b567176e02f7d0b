//go:build linux && !(386 || arm)

package forward

import "syscall"

// The calls that set one thread's ids (asuser_linux.go), with 32-bit ids.
const (
	sysSetgroups = syscall.SYS_SETGROUPS
	sysSetresgid = syscall.SYS_SETRESGID
	sysSetresuid = syscall.SYS_SETRESUID
)
