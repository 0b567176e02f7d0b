package session

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// TestWhenExitedLeavesTheReapToWait: whenExited starts its function once
// the child has exited, and the child's status is still Wait's to collect.
func TestWhenExitedLeavesTheReapToWait(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "read x; exit 3")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	if !whenExited(cmd.Process.Pid, func() { close(exited) }) {
		t.Fatal("whenExited: false (no pidfd on this kernel?)")
	}
	select {
	case <-exited:
		t.Fatal("whenExited's function ran while the child was still running")
	default:
	}
	in.Close() // the child exits now
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("whenExited's function did not run within 20 s of the child's exit")
	}
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Wait after whenExited: %v, want exit status 3", err)
	}
}

// TestIdleSessionsHoldNoThread: a session whose command runs without
// output waits for it on the poller, not in a blocking wait that holds an
// OS thread per session.
func TestIdleSessionsHoldNoThread(t *testing.T) {
	u := testUser(t)
	cfg := testConfig(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const n = 16
	var procs []*Process
	before := threadCount(t)
	for range n {
		var out testkit.Buffer
		p, err := start(ctx, Request{User: u.Name, Stdout: &out, Command: "echo READY; exec sleep 1000"}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		out.WaitFor(t, "READY")
		procs = append(procs, p)
	}
	after := threadCount(t)
	if after-before >= n/2 {
		t.Errorf("%d idle sessions took %d threads more (%d → %d), want fewer than %d", n, after-before, before, after, n/2)
	}
	cancel()
	for _, p := range procs {
		if exit, _ := p.Wait(); exit.Signal == "" {
			t.Errorf("session %d ended with %+v, want a signal", p.Pid(), exit)
		}
	}
}

// threadCount is this process's number of OS threads.
func threadCount(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads: line in /proc/self/status")
	return 0
}
