//go:build unix

package main

import (
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func nonblocking(t *testing.T, f *os.File) bool {
	t.Helper()
	sc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags uintptr
	var errno syscall.Errno
	sc.Control(func(fd uintptr) {
		flags, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
	})
	if errno != 0 {
		t.Fatal(errno)
	}
	return flags&syscall.O_NONBLOCK != 0
}

// blockingPipe is a pipe as ssh hands it to its ProxyCommand: blocking.
func blockingPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(fds[0]), "r"), os.NewFile(uintptr(fds[1]), "w")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// TestPollablePipe: a blocking pipe comes back on the poller (non-blocking,
// so a goroutine parks rather than a thread), carries the data, and is
// blocking again after restore; closing it wakes a parked reader.
func TestPollablePipe(t *testing.T) {
	r, w := blockingPipe(t)
	if nonblocking(t, r) {
		t.Fatal("syscall.Pipe made a non-blocking pipe; the test needs a blocking one")
	}
	p, restore := pollable(r)
	if p == r || !nonblocking(t, p) {
		t.Fatalf("pollable returned the blocking pipe as it was")
	}
	go w.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(p, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v; want hello", buf, err)
	}
	done := make(chan error, 1)
	go func() { _, err := p.Read(buf); done <- err }()
	restore()
	if err := <-done; err == nil {
		t.Error("a read parked on the pipe returned no error after restore")
	}
	if nonblocking(t, r) {
		t.Error("the pipe is still non-blocking after restore")
	}
}

// TestPollableLeavesFilesAlone: a regular file (or a terminal) is returned
// as it is: its flags are shared with whoever opened it.
func TestPollableLeavesFilesAlone(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, restore := pollable(f)
	defer restore()
	if p != f || nonblocking(t, f) {
		t.Errorf("pollable changed a regular file")
	}
}
