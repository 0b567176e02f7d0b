package session

import (
	"golang.org/x/sys/unix"
)

// whenExited starts fn on a goroutine of its own once pid, a child of this
// process that nobody has waited for yet, has exited. Until then nothing
// of the session waits for it: the child's pidfd, readable from the exit
// on, is on the process's watcher (whenReadable). A blocking wait
// (os/exec's Wait) would hold an OS thread for as long as the child runs,
// about 50 KiB of the server's memory per idle session besides the
// kernel's, and a goroutine parked on the pidfd 4-8 KiB.
//
// The child stays a zombie until fn's Wait reaps it, so pid names it
// throughout. whenExited reports false when it could not watch this way
// (pidfd_open needs Linux 5.3); the caller then waits as it can.
func whenExited(pid int, fn func()) bool {
	fd, err := unix.PidfdOpen(pid, 0) // close-on-exec
	if err != nil {
		return false
	}
	if _, err := whenReadable(fd, func() { unix.Close(fd); go fn() }); err != nil {
		unix.Close(fd)
		return false
	}
	return true
}
