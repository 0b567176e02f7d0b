package session

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
)

// Request describes one session to start.
type Request struct {
	// User is the name of the local account to run as. Required.
	User string

	// UID, when set, is the uid User had when the login was decided: Start
	// refuses if the account now resolves to another uid (the account
	// database changed, or a lookup answered differently), so the session
	// runs as exactly the account the policy judged. "" checks nothing.
	UID string

	// Command is run as `$SHELL -c Command`. Empty means an interactive
	// login shell (argv[0] "-bash" style).
	Command string

	// Subsystem "sftp" runs the system's sftp-server as the user, through
	// the user's shell as sshd does; Command must then be empty. Empty
	// means no subsystem. Other names fail with ErrUnknownSubsystem.
	Subsystem string

	// Env holds the client's KEY=VALUE requests that policy allowed.
	// Whatever the caller passes, the refusals of the one environment rule
	// ([github.com/sshmesh/sshmesh/policy.EnvAllowed]) apply: variables
	// that change how programs load or run (LD_*, DYLD_*, BASH_ENV, ENV,
	// BASH_FUNC_*, EDITOR, ...), the ones the session sets itself (PATH,
	// HOME, USER, TERM, SSH_*, ...), in any case, and malformed names and
	// values are dropped.
	Env []string

	// ExtraEnv holds the server's own KEY=VALUE variables (for example
	// SSHMESH_SESSION_ID), added last and not filtered.
	ExtraEnv []string

	// Pty requests a pseudo-terminal. Nil means pipes, with stderr kept
	// apart from stdout.
	Pty *Pty

	// Remote is the client's mesh address (SSH_CLIENT, SSH_CONNECTION,
	// the utmp host). Local is the server's (SSH_CONNECTION).
	Remote, Local netip.AddrPort

	// Stdin is copied to the child until it returns EOF or an error.
	// Without a Pty, EOF closes the child's stdin; with a Pty, copying
	// just stops. Nil means the child's stdin is at EOF (pipes) or
	// nothing is typed (Pty).
	Stdin io.Reader

	// Stdout receives the child's output (and, with a Pty, everything
	// written to the terminal). Nil discards it.
	Stdout io.Writer

	// Stderr receives the child's stderr when there is no Pty. Nil
	// discards it.
	Stderr io.Writer

	// SFTPServer is the sftp-server binary for Subsystem "sftp". Empty
	// means the first of /usr/lib/openssh/sftp-server,
	// /usr/libexec/openssh/sftp-server, /usr/lib/ssh/sftp-server and
	// /usr/libexec/sftp-server that exists.
	SFTPServer string

	// HostRules are the host's rules for the session: with PAMService
	// set, the session runs inside a PAM session (see [HostRules]). The
	// zero value uses no PAM. The account rules ([CheckAccount]) are for
	// the caller to apply before the login is accepted.
	HostRules HostRules

	// Notice is shown to an interactive login (a login shell with a Pty)
	// before its last login line, as sshd shows what PAM said during the
	// account check: the notice [CheckAccount] returned. "" shows nothing.
	Notice string

	// Logger receives details the client must not see (utmp, chown and
	// terminal mode failures). Nil discards them.
	Logger *slog.Logger
}

// Pty is a pseudo-terminal request (RFC 4254 §6.2).
type Pty struct {
	// Term is the client's TERM. Empty leaves TERM unset.
	Term string
	// Window is the initial size; 0×0 leaves the kernel's default.
	Window Window
	// Modes holds the encoded terminal modes exactly as received in the
	// pty-req (see ParseModes). Nil leaves the kernel's defaults.
	Modes []byte
}

// Window is a terminal size in characters, and in pixels when the client
// tells them. Cols and Rows are 0 when the client does not know them
// (ssh -tt with stdin that is not a terminal asks for a 0×0 pty): treat 0
// as unknown.
type Window struct {
	Cols, Rows    uint32 // characters
	Width, Height uint32 // pixels; 0 when the client does not say
}

// Exit is how a session's first process ended.
type Exit struct {
	// Code is the exit status, or 128 plus the signal number when the
	// process was killed by a signal, as a shell reports it.
	Code int
	// Signal is the RFC 4254 §6.10 name of the signal that killed the
	// process ("TERM", "KILL", ...), "SIG@openssh.com" for signals that
	// list lacks (as sshd sends), or empty when it exited normally. When
	// it is not empty the server sends exit-signal instead of exit-status.
	Signal string
	// CoreDumped reports whether a core dump was written.
	CoreDumped bool
}

// Errors a client may be shown. Start wraps them in a *ClientError whose
// Msg is a sentence fit to send to the client; test for them with
// errors.Is.
var (
	// ErrUnknownUser: Request.User does not exist on this host.
	ErrUnknownUser = errors.New("session: unknown user")
	// ErrNotPermitted: the server is not root and Request.User is not
	// the user it runs as.
	ErrNotPermitted = errors.New("session: not permitted")
	// ErrUnknownSubsystem: a subsystem other than "sftp" was asked for.
	ErrUnknownSubsystem = errors.New("session: unknown subsystem")
	// ErrNoSFTPServer: no sftp-server binary was found.
	ErrNoSFTPServer = errors.New("session: no sftp-server")
	// ErrNoPty: the operation needs a pseudo-terminal and the session
	// has none (Break).
	ErrNoPty = errors.New("session: no pty")
	// ErrUnsupported: this platform has no session support.
	ErrUnsupported = errors.New("session: not supported on this platform")
)

// ClientError is an error whose Msg may be shown to the SSH client as is.
type ClientError struct {
	// Msg is one sentence for the client, e.g. `There is no user "bob"
	// on this host.`
	Msg string
	// Err is the sentinel it stands for (ErrUnknownUser, ...).
	Err error
}

// Error returns "session: " followed by Msg.
func (e *ClientError) Error() string { return "session: " + e.Msg }

// Unwrap returns e.Err.
func (e *ClientError) Unwrap() error { return e.Err }

func discardLogger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}
