package sshmesh

import (
	"errors"
	"fmt"

	"github.com/sshmesh/sshmesh/session"
)

// LoginHandler returns the default [Handler]: the session runs as the
// mapped local user, as OpenSSH's sshd runs it — the login shell or
// `$SHELL -c COMMAND`, or the sftp subsystem, with a PTY when the client
// asked for one, a clean login environment, signals, window changes and
// the exit status or signal passed back. See package session for the OS side.
func LoginHandler() Handler { return HandlerFunc(serveLogin) }

func serveLogin(s *Session) {
	if proc := startLogin(s); proc != nil {
		forwardUntilEnd(s, proc)
		endLogin(s, proc)
	}
}

// startLogin starts the session's process, or tells the client why not
// and returns nil. startLogin, forwardUntilEnd and endLogin are separate
// frames so that the handler's goroutine, parked in forwardUntilEnd for
// as long as the session runs, uses little of its stack: the runtime
// halves a parked goroutine's stack at a collection only while it uses
// under a quarter of it (less 800 bytes), and serveLogin as one function
// (1.6 KiB of locals, most of them the request) kept it at 8 KiB.
//
//go:noinline
func startLogin(s *Session) *session.Process {
	if s.AccountUID() == "" {
		// No such account when the login was decided: whatever the name
		// is now, the policy did not judge it.
		fmt.Fprintf(s.Stderr(), "sshmesh: There is no user %q on this host.\r\n", s.LocalUser())
		s.Exit(1)
		return nil
	}
	req := session.Request{
		User:      s.LocalUser(),
		UID:       s.AccountUID(),
		Command:   s.RawCommand(),
		Subsystem: s.Subsystem(),
		Env:       s.Environ(),
		ExtraEnv:  s.ServerEnviron(),
		Remote:    s.Identity().Addr,
		Local:     s.LocalAddr(),
		Stdin:     s,
		Stdout:    s,
		Stderr:    s.Stderr(),
		Logger:    s.Logger(),
		HostRules: s.conn.srv.HostRules,
	}
	if p, ok := s.Pty(); ok {
		req.Pty = &p
		if req.Command == "" && req.Subsystem == "" {
			req.Notice = s.conn.takeNotice()
		}
	}
	// Until the session ends (s.Done), not its Context: Shutdown's start
	// asks Go handlers to finish, but leaves login sessions running until
	// its deadline, as sshd does.
	proc, err := session.Start(s.life, req)
	if err != nil {
		msg := "could not start the session"
		var ce *session.ClientError
		if errors.As(err, &ce) {
			msg = ce.Msg
		}
		s.Logger().Warn("session not started", "local_user", s.LocalUser(), "err", err)
		fmt.Fprintf(s.Stderr(), "sshmesh: %s\r\n", msg)
		s.Exit(1)
		return nil
	}
	return proc
}

// forwardUntilEnd passes the session's window changes, signals and breaks
// on to proc until it ends, on the handler's own goroutine (not one more
// goroutine per session).
func forwardUntilEnd(s *Session, proc *session.Process) {
	windows, signals, breaks := s.WindowChanges(), s.Signals(), s.Breaks()
	for {
		// A closed channel (the session ended) is set to nil, so its
		// case stops firing.
		select {
		case w, ok := <-windows:
			if !ok {
				windows = nil
				continue
			}
			proc.Resize(w.Cols, w.Rows, w.Width, w.Height)
		case sig, ok := <-signals:
			if !ok {
				signals = nil
				continue
			}
			proc.Signal(string(sig))
		case d, ok := <-breaks:
			if !ok {
				breaks = nil
				continue
			}
			proc.Break(uint32(d.Milliseconds()))
		case <-proc.Done():
			return
		}
	}
}

// endLogin gives the client the exit of proc, which has ended.
//
//go:noinline
func endLogin(s *Session, proc *session.Process) {
	exit, err := proc.Wait()
	if err != nil {
		s.Logger().Warn("session ended with an error", "local_user", s.LocalUser(), "err", err)
	}
	if exit.Signal != "" {
		s.ExitSignal(Signal(exit.Signal), exit.CoreDumped, "")
		return
	}
	s.Exit(exit.Code)
}
