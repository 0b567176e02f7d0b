// Package pamproto is what package session and the sshmesh-pam helper
// (cmd/sshmesh-pam) say to each other: the helper's command line and the
// JSON lines they exchange on two pipes during a PAM session.
//
// # Account
//
//	sshmesh-pam account --service S [--confdir D] --user U --rhost ADDR
//
// runs pam_acct_mgmt with PAM_TTY "ssh" (as sshd). Exit 0: allowed, and
// stdout holds what PAM said all the same. Exit [ExitRefused]: refused, and
// stdout holds the text for the client. Any other exit: the helper failed
// (stderr says why).
//
// # Session
//
//	sshmesh-pam session --service S [--confdir D] --user U --uid N --rhost ADDR --tty TTY
//
// runs as root with the session's stdin, stdout and stderr, reads [Spec]
// lines on fd 3 and writes [Report] lines on fd 4:
//
//  1. pam_open_session, pam_setcred(PAM_ESTABLISH_CRED); then a Report
//     with Env (pam_getenvlist) and any Warning, or Error.
//  2. A Spec from the server: the program, its arguments, its whole
//     environment (built by package session, PAM's merged in by rule) and
//     directory. The helper starts it as the user (uid, gid and the groups
//     the process has after pam_setcred, so pam_group applies), in a new
//     session with the terminal as controlling terminal when Setctty, with
//     the limits PAM set (pam_limits), and reports its Pid or an Error.
//  3. When the program has exited: pam_setcred(PAM_DELETE_CRED),
//     pam_close_session, and a Report with its wait status.
package pamproto

// Descriptors of the two pipes in the session helper.
const (
	SpecFD   = 3 // server → helper: Spec lines
	ReportFD = 4 // helper → server: Report lines
)

// ExitRefused is the account helper's exit status when PAM refused.
const ExitRefused = 1

// Spec is the program the session helper starts as the user.
type Spec struct {
	Path    string   `json:"path"`
	Args    []string `json:"args"`
	Env     []string `json:"env"`
	Dir     string   `json:"dir"`
	Setctty bool     `json:"setctty,omitempty"` // stdin is the terminal to control
	// RC, when set, are the arguments with which Path runs the user's rc
	// file (~/.ssh/rc) first, as the user, with stdin at EOF.
	RC []string `json:"rc,omitempty"`
}

// Report is one step of the session helper.
type Report struct {
	// Env is PAM's environment after the session opened (step 1).
	Env []string `json:"env,omitempty"`
	// Warning is a step that failed without ending the session (step 1:
	// pam_setcred, which sshd also lets fail when PAM did not
	// authenticate).
	Warning string `json:"warning,omitempty"`
	// Pid is the started program's process id (step 2).
	Pid int `json:"pid,omitempty"`
	// Exited is set when the program ended; Status is its wait status
	// (step 3).
	Exited bool `json:"exited,omitempty"`
	Status int  `json:"status,omitempty"`
	// Error ends the helper: a step failed. ClientMsg is a sentence for
	// the client, Error the detail for the log.
	Error     string `json:"error,omitempty"`
	ClientMsg string `json:"client_msg,omitempty"`
}
