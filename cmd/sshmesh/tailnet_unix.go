//go:build unix

package main

import (
	"context"
	"os"
	"syscall"
)

// execTailnet replaces this process with the program, so that signals
// (SIGHUP reloads, SIGTERM stops) and systemd's view of the service go to
// it directly. Tests, which pass their own stdio, run it as a child instead.
func execTailnet(ctx context.Context, path string, argv []string, io stdio) error {
	if io.in != os.Stdin || io.out != os.Stdout || io.err != os.Stderr {
		return runTailnet(ctx, path, argv, io)
	}
	return syscall.Exec(path, argv, os.Environ())
}
