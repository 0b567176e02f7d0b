//go:build linux && (386 || arm)

package forward

import "syscall"

// The calls that set one thread's ids (asuser_linux.go): on 386 and arm the
// plain ones take 16-bit ids; these are the 32-bit ones.
const (
	sysSetgroups = syscall.SYS_SETGROUPS32
	sysSetresgid = syscall.SYS_SETRESGID32
	sysSetresuid = syscall.SYS_SETRESUID32
)
