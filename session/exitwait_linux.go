package session

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// awaitExit waits until pid, a child of this process that nobody has
// waited for yet, has exited, without holding an OS thread: it parks on
// the runtime's poller until the child's pidfd is readable, which it is
// from the exit on. A blocking wait (os/exec's Wait) holds a thread for as
// long as the child runs: one per idle session, about 50 KiB of the
// server's memory each (the thread's stacks) besides the kernel's.
//
// The child stays a zombie until the caller's Wait reaps it, so pid names
// it throughout. awaitExit reports false when it could not wait this way
// (pidfd_open with PIDFD_NONBLOCK needs Linux 5.10); the caller's Wait
// then blocks a thread, as before.
func awaitExit(pid int) bool {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), "pidfd") // non-blocking: on the poller
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	err = rc.Read(func(fd uintptr) bool {
		for {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// An error here is not the poller's wait's: let Wait find out.
			return err != nil || n > 0
		}
	})
	return err == nil
}
