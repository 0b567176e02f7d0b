package session

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// loginUIDFile is the calling thread's audit login uid. The kernel lets a
// task set only its own, and a new process inherits the loginuid of the
// thread that forked it.
const loginUIDFile = "/proc/thread-self/loginuid"

// startAsLogin calls start, which starts the session's processes, from a
// thread whose audit login uid is uid, so the session's processes carry it in
// /proc/PID/loginuid and auditd attributes what they do to the user, as
// pam_loginuid does for sshd. The thread is never reused: its goroutine
// ends locked to it, so Go ends the thread. That thread is never the main
// thread: the main thread's loginuid is the one /proc/PID/loginuid shows
// for the whole server, and Go never ends the main thread. Where the kernel
// has no audit support or refuses (a container without CAP_AUDIT_CONTROL
// whose loginuid is already set, an immutable loginuid) the session starts
// without it.
func startAsLogin(uid string, start func() error, log *slog.Logger) error {
	asLogin := func() error {
		if err := setThreadLoginUID(uid); err != nil {
			level := slog.LevelWarn
			if errors.Is(err, os.ErrNotExist) {
				level = slog.LevelDebug
			}
			log.Log(context.Background(), level, "session: audit login uid not set", "err", err)
		}
		return start()
	}
	errc := make(chan error, 1)
	go func() { errc <- onLoginThread(asLogin) }()
	return <-errc
}

// onLoginThread locks the calling goroutine to its thread and runs
// asLogin there, leaving the thread locked so that it ends with the
// goroutine. On the main thread it instead holds the thread while another
// goroutine runs asLogin: with the main thread locked to this one, that
// goroutine runs on another thread, which ends with it.
func onLoginThread(asLogin func() error) error {
	runtime.LockOSThread() // never unlocked on a thread that took the uid
	if unix.Gettid() != unix.Getpid() {
		return asLogin()
	}
	inner := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, see above
		inner <- asLogin()
	}()
	err := <-inner
	runtime.UnlockOSThread()
	return err
}

func setThreadLoginUID(uid string) error {
	f, err := os.OpenFile(loginUIDFile, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(uid)
	return err
}
