package session

import (
	"errors"
	"net/netip"
)

// HostRules are the host's own rules for logins to a local account, which
// apply on top of the policy: the policy decides who may log in as whom;
// the host may still say "not now" (/etc/nologin, an expired account, a
// pam_access rule) and "how" (limits, a home made on first login, a logind
// session). [CheckAccount] applies them before a login is accepted and
// [Start] around each session.
//
// The zero value applies the host's rules sshd applies without PAM:
// /etc/nologin and /run/nologin refuse logins other than root's, and an
// account whose shadow expiry date has passed is refused. A password
// locked with "!" (passwd -l, or useradd's default for an account without
// a password) does not refuse: the login uses no password, as with sshd
// under PAM (Debian's default); lock an account with `usermod -e 1`.
//
// With PAMService set, the host's PAM stack decides instead (account and
// session, never auth): see the PAMService field.
type HostRules struct {
	// PAMService, when not "", runs the host's PAM stack for this service
	// name (/etc/pam.d/PAMService) for every login: pam_acct_mgmt before
	// the login is accepted (a refusal shows the client PAM's message),
	// and pam_setcred and pam_open_session as root before the session's
	// process starts as the user, pam_close_session when it ends; the
	// limits and the environment PAM sets apply to the session. Then
	// /etc/nologin and account expiry are the PAM stack's to check
	// (pam_nologin, pam_unix), as with sshd. PAM needs the sshmesh-pam
	// helper (cmd/sshmesh-pam, built with cgo), see PAMHelper. "" means no
	// PAM.
	PAMService string

	// PAMHelper is the path of the sshmesh-pam helper binary. "" means
	// sshmesh-pam in the directory of the running executable, else in
	// PATH. It runs as root, so it and every directory above it must
	// belong to root (or the server's user) and be writable by no one else
	// (sticky directories such as /tmp excepted), as sshd requires of the
	// programs it runs.
	PAMHelper string

	// PAMConfDir is the directory of PAM service files. "" means PAM's own
	// (/etc/pam.d); a test or an embedder with a stack of its own points
	// it elsewhere (needs Linux-PAM 1.4 or later, pam_start_confdir).
	PAMConfDir string

	// Nologin lists the files whose existence refuses logins other than
	// root's, showing the client the file's text, when PAMService is "".
	// nil means /run/nologin and /etc/nologin, as pam_nologin.
	Nologin []string
}

// Account is a login about to be accepted, for [CheckAccount].
type Account struct {
	// User is the local account the login maps to. Required.
	User *User
	// Remote is the client's mesh address (PAM_RHOST).
	Remote netip.AddrPort
}

// ErrAccountRefused: the host's rules refuse the login (nologin, an expired
// account, PAM's account management).
var ErrAccountRefused = errors.New("session: account refused by the host")

// defaultNologin are the files pam_nologin checks.
var defaultNologin = []string{"/run/nologin", "/etc/nologin"}

func (h HostRules) nologinFiles() []string {
	if h.Nologin == nil {
		return defaultNologin
	}
	return h.Nologin
}
