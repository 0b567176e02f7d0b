package session

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
)

// userRC returns the rc file sshd would run before the session: ~/.ssh/rc
// when it exists, else the system's (/etc/ssh/sshrc), else "". As sshd
// (PermitUserRC yes, its default), it runs for every session, with the
// session's user, environment, directory and output, before the shell or
// command; no X11 data is written to it, since sshmesh forwards no X11.
func userRC(u *User, systemRC string) string {
	for _, p := range []string{filepath.Join(u.Home, ".ssh", "rc"), systemRC} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// rcArgs are the arguments with which the user's shell runs the rc file,
// as sshd does: `$SHELL -c '/bin/sh FILE'`.
func rcArgs(shell, rc string) []string {
	return []string{filepath.Base(shell), "-c", "/bin/sh " + shellQuote(rc)}
}

// runRC runs the rc file with cmd's user, environment and output, in home
// (or "/"), with stdin at EOF, and waits for it; a failure is logged, and
// the session starts all the same, as with sshd.
func runRC(cmd *exec.Cmd, args []string, home string, log *slog.Logger) {
	attr := *cmd.SysProcAttr
	attr.Setctty, attr.Ctty = false, 0 // its stdin is not the terminal
	rc := &exec.Cmd{Path: cmd.Path, Args: args, Env: cmd.Env, Dir: home,
		Stdout: cmd.Stdout, Stderr: cmd.Stderr, SysProcAttr: &attr}
	if st, err := os.Stat(home); err != nil || !st.IsDir() {
		rc.Dir = "/"
	}
	if err := rc.Run(); err != nil {
		log.Debug("session: rc file", "args", args, "err", err)
	}
}
