//go:build linux && cgo

// Command sshmesh-pam runs the host's PAM stack for one sshmesh login: the
// account check before the login is accepted, or the PAM session around
// the user's program. Package session runs it (see session.HostRules);
// it is not meant to be run by hand. The protocol is in
// internal/pamproto.
//
// It is a program of its own, not part of the server, because PAM modules
// act on the process that calls them: pam_limits sets the caller's
// resource limits, pam_loginuid writes its /proc/self/loginuid, pam_group
// its groups. In the server they would change the server, and PAM's
// modules are not written for a multi-threaded process. Here they change
// this process, which then starts the user's program, so the program
// inherits them; and only this program needs cgo.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/msteinert/pam/v2"
	"golang.org/x/sys/unix"

	"github.com/sshmesh/sshmesh/internal/pamproto"
	"github.com/sshmesh/sshmesh/session"
)

// PAM modules write /proc/self/loginuid (pam_loginuid), which only the
// main thread may, and the program it starts inherits the loginuid of the
// thread that forks it: PAM calls and the fork stay on the main thread.
func init() { runtime.LockOSThread() }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sshmesh-pam account|session FLAGS (run by sshmesh, see internal/pamproto)")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("sshmesh-pam "+os.Args[1], flag.ExitOnError)
	service := fs.String("service", "", "PAM service name")
	confDir := fs.String("confdir", "", "directory of PAM service files (default /etc/pam.d)")
	userName := fs.String("user", "", "local account")
	uid := fs.String("uid", "", "the account's uid when the login was decided")
	rhost := fs.String("rhost", "", "the client's address (PAM_RHOST)")
	tty := fs.String("tty", "ssh", "the session's terminal (PAM_TTY)")
	fs.Parse(os.Args[2:])
	if *service == "" || *userName == "" {
		fmt.Fprintln(os.Stderr, "sshmesh-pam: --service and --user are required")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "account":
		os.Exit(account(*service, *confDir, *userName, *rhost))
	case "session":
		os.Exit(runSession(*service, *confDir, *userName, *uid, *rhost, *tty))
	default:
		fmt.Fprintf(os.Stderr, "sshmesh-pam: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

// conversation answers PAM: there is no authentication step (identity
// comes from the mesh), so prompts fail; messages go to show.
func conversation(show func(string)) pam.ConversationFunc {
	return func(s pam.Style, msg string) (string, error) {
		switch s {
		case pam.ErrorMsg, pam.TextInfo:
			show(msg)
			return "", nil
		}
		return "", errors.New("sshmesh-pam: PAM asked a question; sshmesh logins have no authentication step")
	}
}

func startPAM(service, confDir, user, rhost, tty string, show func(string)) (*pam.Transaction, error) {
	var tx *pam.Transaction
	var err error
	if confDir != "" {
		tx, err = pam.StartConfDir(service, user, conversation(show), confDir)
	} else {
		tx, err = pam.Start(service, user, conversation(show))
	}
	if err != nil {
		return nil, fmt.Errorf("pam_start %s: %w", service, err)
	}
	for item, v := range map[pam.Item]string{pam.Rhost: rhost, pam.Tty: tty} {
		if v == "" {
			continue
		}
		if err := tx.SetItem(item, v); err != nil {
			tx.End()
			return nil, fmt.Errorf("pam_set_item: %w", err)
		}
	}
	return tx, nil
}

// account runs pam_acct_mgmt and prints PAM's message on refusal.
func account(service, confDir, user, rhost string) int {
	var msgs []string
	tx, err := startPAM(service, confDir, user, rhost, "ssh", func(m string) { msgs = append(msgs, m) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "sshmesh-pam:", err)
		return 2
	}
	defer tx.End()
	err = tx.AcctMgmt(0)
	if err == nil {
		// What PAM said all the same, for the client (pam_nologin to root).
		if len(msgs) > 0 {
			fmt.Println(strings.Join(msgs, "\n"))
		}
		return 0
	}
	var perr pam.Error
	if !errors.As(err, &perr) {
		fmt.Fprintln(os.Stderr, "sshmesh-pam: pam_acct_mgmt:", err)
		return 2
	}
	text := strings.TrimSpace(strings.Join(msgs, "\n"))
	why := perr.Error()
	if perr == pam.ErrNewAuthtokReqd {
		why += "; sshmesh cannot change passwords at login"
	}
	if text == "" {
		text = "The host's PAM account rules refuse this login: " + why + "."
	}
	fmt.Println(text)
	fmt.Fprintln(os.Stderr, "sshmesh-pam: pam_acct_mgmt:", why)
	return pamproto.ExitRefused
}

// runSession opens the PAM session, starts the program the server sends as
// the user, waits for it and closes the session.
func runSession(service, confDir, userName, uid, rhost, tty string) int {
	report := json.NewEncoder(os.NewFile(pamproto.ReportFD, "report"))
	specs := bufio.NewReader(os.NewFile(pamproto.SpecFD, "spec"))
	fail := func(clientMsg string, err error) int {
		report.Encode(pamproto.Report{Error: err.Error(), ClientMsg: clientMsg})
		return 1
	}
	// The server's signals are for the user's program (its own session);
	// this process outlives it to close the PAM session. Caught, not
	// ignored, so the program starts with the default dispositions.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGPIPE)

	u, err := session.LookupUser(userName)
	if err != nil {
		return fail("There is no such user on this host.", err)
	}
	if uid != "" && u.Uid != uid {
		return fail("The account changed since the login was decided.", fmt.Errorf("user %s: uid %s at login, %s now", userName, uid, u.Uid))
	}
	// The account's groups first, as sshd's initgroups, so pam_group's
	// setcred can add to them.
	groups, err := gids(u.Groups)
	if err != nil {
		return fail("The account's groups are not valid.", err)
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fail("The session could not be set up.", fmt.Errorf("setgroups: %w", err))
	}
	tx, err := startPAM(service, confDir, userName, rhost, tty, func(m string) { fmt.Fprintln(os.Stderr, m) })
	if err != nil {
		return fail("The host's PAM session setup failed.", err)
	}
	defer tx.End()
	var before syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &before)
	if err := tx.OpenSession(0); err != nil {
		return fail("The host's PAM session setup failed: "+err.Error()+".", fmt.Errorf("pam_open_session: %w", err))
	}
	defer tx.CloseSession(0)
	// As sshd when PAM did not authenticate the user: a failing
	// pam_setcred (a stack whose auth part is pam_deny, or none) is
	// reported, not fatal.
	warning := ""
	if err := tx.SetCred(pam.EstablishCred); err != nil {
		warning = "pam_setcred: " + err.Error()
	} else {
		defer tx.SetCred(pam.DeleteCred)
	}
	keepNofileLimit(before)
	envMap, err := tx.GetEnvList()
	if err != nil {
		return fail("The host's PAM session setup failed.", fmt.Errorf("pam_getenvlist: %w", err))
	}
	var env []string
	for k, v := range envMap {
		env = append(env, k+"="+v)
	}
	if err := report.Encode(pamproto.Report{Env: env, Warning: warning}); err != nil {
		return 1
	}

	line, err := specs.ReadBytes('\n')
	if err != nil {
		return 1 // the server gave up on the session
	}
	var spec pamproto.Spec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fail("The session could not be started.", fmt.Errorf("spec: %w", err))
	}
	cred, err := credential(u)
	if err != nil {
		return fail("The session could not be started.", err)
	}
	cmd := &exec.Cmd{Path: spec.Path, Args: spec.Args, Env: spec.Env, Dir: spec.Dir,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Setctty: spec.Setctty, Ctty: 0, Credential: cred}}
	// Nothing of this process but 0, 1 and 2 reaches the program: not the
	// pipes, not what PAM modules opened.
	unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if len(spec.RC) > 0 {
		// The user's rc file first, as sshd runs it; its failure does not
		// stop the session.
		rc := &exec.Cmd{Path: spec.Path, Args: spec.RC, Env: spec.Env, Dir: spec.Dir,
			Stdout: os.Stdout, Stderr: os.Stderr, SysProcAttr: &syscall.SysProcAttr{Setsid: true, Credential: cred}}
		rc.Run()
	}
	if err := startInDir(cmd); err != nil {
		return fail("The session could not be started.", fmt.Errorf("start %s: %w", spec.Path, err))
	}
	if err := report.Encode(pamproto.Report{Pid: cmd.Process.Pid}); err != nil {
		cmd.Process.Kill()
	}
	cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	report.Encode(pamproto.Report{Exited: true, Status: int(ws)})
	return 0
}

// startInDir starts cmd in its directory or, when the user may not enter
// it, in "/" with sshd's message, as package session does without PAM.
func startInDir(cmd *exec.Cmd) error {
	err := cmd.Start()
	var errno syscall.Errno
	if err == nil || cmd.Dir == "/" || !errors.As(err, &errno) ||
		errno != syscall.EACCES && errno != syscall.ENOENT && errno != syscall.ENOTDIR && errno != syscall.ELOOP {
		return err
	}
	text := errno.Error()
	fmt.Fprintf(cmd.Stderr, "Could not chdir to home directory %s: %s%s\n", cmd.Dir, strings.ToUpper(text[:1]), text[1:])
	retry := &exec.Cmd{Path: cmd.Path, Args: cmd.Args, Env: cmd.Env, Dir: "/", Stdin: cmd.Stdin,
		Stdout: cmd.Stdout, Stderr: cmd.Stderr, SysProcAttr: cmd.SysProcAttr}
	if err := retry.Start(); err != nil {
		return err
	}
	*cmd = *retry
	return nil
}

// keepNofileLimit makes the open-files limit PAM set (pam_limits) the one
// the program gets. Go raises its own soft limit at start and gives
// children the original back, unless the limit was set through package
// syscall since: so set what PAM set again, through it.
func keepNofileLimit(before syscall.Rlimit) {
	var now syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now) == nil && now != before {
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &now)
	}
}

// credential is u's uid and gid with this process's groups, which
// pam_setcred may have added to.
func credential(u *session.User) (*syscall.Credential, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid %q: %w", u.Gid, err)
	}
	groups, err := unix.Getgroups()
	if err != nil {
		return nil, fmt.Errorf("getgroups: %w", err)
	}
	c := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	for _, g := range groups {
		c.Groups = append(c.Groups, uint32(g))
	}
	return c, nil
}

func gids(list []string) ([]int, error) {
	var out []int
	for _, g := range list {
		n, err := strconv.Atoi(g)
		if err != nil {
			return nil, fmt.Errorf("group %q: %w", g, err)
		}
		out = append(out, n)
	}
	return out, nil
}
