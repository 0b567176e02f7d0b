// Package session starts real login sessions as a local user: a login shell,
// a command or the sftp subsystem, with or without a pseudo-terminal, the way
// OpenSSH's sshd does.
//
// The SSH server in package sshmesh calls [Start] once per session channel
// and relays the channel's requests to the returned [Process]: window-change
// to [Process.Resize], signal to [Process.Signal], break to [Process.Break];
// [Process.Wait] gives the exit-status or exit-signal to send back.
//
// # Identity
//
// The child runs with exactly the uid, gid and supplementary groups of
// [Request.User] (see [LookupUser]), in a new session (setsid), with its
// home directory as working directory. A server running as root may start
// sessions as any user; a server running as an ordinary user only as
// itself ([ErrNotPermitted]). The child gets no capabilities beyond the
// user's own and no file descriptor of the server other than 0, 1 and 2:
// like sshd's closefrom(3), [Start] sets close-on-exec on every
// descriptor of the server from 3 up, including any it inherited.
//
// # Environment
//
// The environment is built by rule and never inherited from the server:
// HOME, USER, LOGNAME, SHELL, PATH (from /etc/login.defs), MAIL,
// LANG and LC_* from /etc/default/locale, SSH_CONNECTION, SSH_CLIENT,
// SSH_TTY, TERM and XDG_RUNTIME_DIR, then the client's variables
// ([Request.Env]) minus anything that changes how programs load (LD_*,
// BASH_ENV, PATH, ...), then [Request.ExtraEnv]. Which client variables are
// dropped is the server's own environment rule,
// [github.com/sshmesh/sshmesh/policy.EnvAllowed], applied again here.
// When the client's terminal declares UTF-8 (the IUTF8 terminal mode, which
// OpenSSH's client sends from a UTF-8 terminal and the web terminal always
// sends) and none of LC_ALL, LC_CTYPE and LANG is set by then, LANG is
// C.UTF-8: in the C locale a shell's line editor reads each byte of a
// multi-byte character as a Meta key.
//
// # Terminals
//
// With a [Pty] the child's stdin, stdout and stderr are a fresh
// pseudo-terminal that is its controlling terminal, owned by the user,
// with the client's TERM, size and RFC 4254 terminal modes (see
// [ParseModes]). Sessions with a terminal are recorded in utmp and wtmp,
// so who(1) and last(1) show them with the client's mesh address, and in
// lastlog; an interactive login shell also prints sshd's "Last login: …"
// line and /etc/motd unless ~/.hushlogin exists. ~/.ssh/rc (else
// /etc/ssh/sshrc) runs before every session, as sshd runs it.
// Without a Pty the child gets three pipes and stderr stays apart.
//
// # Host rules
//
// [HostRules] are the host's own rules on top of the caller's policy.
// [CheckAccount] applies them before a login is accepted: /etc/nologin and
// shadow expiry, or PAM's account management. Each session's processes
// carry the user's audit login uid (/proc/PID/loginuid) and auditd gets a
// USER_LOGIN record. With [HostRules.PAMService], each session runs inside
// a PAM session (limits, pam_env's environment, logind, a home made on
// first login), opened by the sshmesh-pam helper (cmd/sshmesh-pam, the
// only part that needs cgo) rather than in the server, since PAM modules
// change the process that calls them.
//
// # Ending
//
// A session ends when its first process has exited and its output has been
// copied out. With a terminal, output still readable when the shell exits
// is drained and the terminal is then closed, so background jobs that keep
// it open cannot hold the session. Without a terminal, like sshd, the
// session lasts until every holder of the output pipes has closed them.
// Cancelling the context given to [Start] (the client went away) sends
// SIGHUP and then SIGKILL to every process of the session.
package session
