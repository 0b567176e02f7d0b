package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// `sshmesh serve --tailnet` serves on an existing tailnet (headscale or
// Tailscale) through tsnet, and `sshmesh recorder --tailnet` runs a
// recorder node there. That code lives in a program of its own,
// sshmesh-tailnet (module github.com/sshmesh/sshmesh/tailnet): linked into
// this binary it doubles its size (15 → 30 MB stripped) and adds about
// 5 ms to every start, and `sshmesh nc` starts once per ssh login.

// tailnetProgram is the name of the program that serves on a tailnet.
const tailnetProgram = "sshmesh-tailnet"

// wantsTailnet reports whether serve's or recorder's arguments ask for a
// tailnet.
func wantsTailnet(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--tailnet", "-tailnet", "--tailnet=true", "-tailnet=true":
			return true
		}
	}
	return false
}

// findTailnetProgram returns sshmesh-tailnet beside this executable, or
// else on PATH.
func findTailnetProgram() (string, error) {
	name := tailnetProgram
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	self, err := os.Executable()
	if err == nil {
		beside := filepath.Join(filepath.Dir(self), name)
		if fi, err := os.Stat(beside); err == nil && !fi.IsDir() {
			return beside, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	where := "on PATH"
	if self != "" {
		where = "beside " + self + " or on PATH"
	}
	return "", fmt.Errorf("--tailnet needs the %s program (the tailnet transport is a program of its own, so that `sshmesh nc` stays small and quick), and there is none %s; install it with `go install github.com/sshmesh/sshmesh/tailnet/cmd/sshmesh-tailnet@latest` or build it from tailnet/ in the source tree", tailnetProgram, where)
}

// onTailnet runs `sshmesh-tailnet COMMAND ARGS` (serve or recorder) in
// this process's place.
func onTailnet(ctx context.Context, command string, args []string, io stdio) error {
	path, err := findTailnetProgram()
	if err != nil {
		return err
	}
	return execTailnet(ctx, path, append([]string{tailnetProgram, command}, args...), io)
}

// runTailnet runs the program as a child (where a process cannot be
// replaced), passing its exit status on.
func runTailnet(ctx context.Context, path string, argv []string, io stdio) error {
	cmd := exec.CommandContext(ctx, path, argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = io.in, io.out, io.err
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitError(ee.ExitCode())
	}
	return err
}
