package session

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
)

// loginUIDFile is the calling thread's audit login uid. The kernel lets a
// task set only its own, and a new process inherits the loginuid of the
// thread that forked it.
const loginUIDFile = "/proc/thread-self/loginuid"

// startAsLogin calls start, which starts the session's processes, from a
// thread whose audit login uid is uid, so the session's processes carry it in
// /proc/PID/loginuid and auditd attributes what they do to the user, as
// pam_loginuid does for sshd. The thread is never reused: its goroutine
// ends locked to it, so Go ends the thread. Where the kernel has no audit
// support or refuses (a container without CAP_AUDIT_CONTROL whose loginuid
// is already set, an immutable loginuid) the session starts without it.
func startAsLogin(uid string, start func() error, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, see above
		if err := setThreadLoginUID(uid); err != nil {
			level := slog.LevelWarn
			if errors.Is(err, os.ErrNotExist) {
				level = slog.LevelDebug
			}
			log.Log(context.Background(), level, "session: audit login uid not set", "err", err)
		}
		errc <- start()
	}()
	return <-errc
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
