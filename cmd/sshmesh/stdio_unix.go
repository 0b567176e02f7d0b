//go:build unix

package main

import (
	"os"
	"syscall"
)

// pollable returns f, a pipe or a socket, as a file on Go's network poller,
// and a func that puts f back as it was. ssh hands its ProxyCommand
// blocking pipes; read and written as they are, every read and write
// blocks a thread in the kernel, and during a bulk copy the runtime spends
// a tenth of nc's CPU handing processors between threads (measured: sysmon
// 11% of nc's profile). On the poller a goroutine parks instead. Terminals
// and files are returned as they are: their non-blocking flag is shared
// with the shell that opened them.
func pollable(f *os.File) (*os.File, func()) {
	same := func() {}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&(os.ModeNamedPipe|os.ModeSocket) == 0 {
		return f, same
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return f, same
	}
	var dup int
	var derr error
	if err := sc.Control(func(fd uintptr) { dup, derr = syscall.Dup(int(fd)) }); err != nil || derr != nil {
		return f, same
	}
	// The flag belongs to the open file, which dup shares with f.
	if err := syscall.SetNonblock(dup, true); err != nil {
		syscall.Close(dup)
		return f, same
	}
	p := os.NewFile(uintptr(dup), f.Name()) // on the poller: NewFile sees the flag
	return p, func() {
		p.Close() // wakes a goroutine parked on it
		sc.Control(func(fd uintptr) { syscall.SetNonblock(int(fd), false) })
	}
}
