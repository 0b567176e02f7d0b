package session

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sshmesh/sshmesh/internal/pamproto"
)

// helperName is the PAM helper's file name (cmd/sshmesh-pam).
const helperName = "sshmesh-pam"

// helperEnv is the whole environment of the PAM helper: PAM modules run
// as root in it, so nothing of the server's or the client's.
var helperEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// maxPAMMessage bounds what the account helper may say to a client.
const maxPAMMessage = 4 << 10

// Validate reports whether h can be applied: with PAMService set, the
// helper must be found. A server checks this once at start rather than
// refusing every login.
func (h HostRules) Validate() error {
	if h.PAMService == "" {
		return nil
	}
	if strings.ContainsAny(h.PAMService, "/\x00") || h.PAMService == "." || h.PAMService == ".." {
		return fmt.Errorf("session: HostRules.PAMService %q is not a service name", h.PAMService)
	}
	_, err := h.helper()
	return err
}

// helper finds the sshmesh-pam binary, and checks that only root (or the
// server's own user) could have put it there: it runs as root.
func (h HostRules) helper() (string, error) {
	p := h.PAMHelper
	if p == "" {
		if exe, err := os.Executable(); err == nil {
			if next := filepath.Join(filepath.Dir(exe), helperName); fileExists(next) {
				p = next
			}
		}
	}
	if p == "" {
		var err error
		if p, err = exec.LookPath(helperName); err != nil {
			return "", fmt.Errorf("session: PAM needs the %s helper (go build ./cmd/sshmesh-pam with cgo), next to this program or in PATH: %w", helperName, err)
		}
	}
	abs, err := filepath.Abs(p)
	if err == nil {
		// The path as the kernel will follow it: a symlink's own directory
		// is not where the program lives, and the checks must be of the
		// directories that hold it (and the path run is the one checked).
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", fmt.Errorf("session: PAM helper %s: %w", p, err)
	}
	if err := safePath(abs); err != nil {
		return "", fmt.Errorf("session: PAM helper: %w", err)
	}
	return abs, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// safePath checks, as sshd does for the programs it runs as root, that
// path and every directory above it belong to root or to this process's
// user and are writable by no one else (a directory with the sticky bit,
// such as /tmp, may be: others cannot replace what they do not own there).
func safePath(path string) error {
	euid := uint32(os.Geteuid())
	for p := path; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner", p)
		}
		if sys.Uid != 0 && sys.Uid != euid {
			return fmt.Errorf("%s belongs to uid %d, not root", p, sys.Uid)
		}
		sticky := st.IsDir() && st.Mode()&os.ModeSticky != 0
		if st.Mode().Perm()&0o022 != 0 && !sticky {
			return fmt.Errorf("%s is writable by others (mode %v)", p, st.Mode().Perm())
		}
		if p == "/" {
			return nil
		}
	}
}

// pamArgs are the helper's flags common to both modes.
func (h HostRules) pamArgs(mode, user string) []string {
	args := []string{helperName, mode, "--service", h.PAMService, "--user", user}
	if h.PAMConfDir != "" {
		args = append(args, "--confdir", h.PAMConfDir)
	}
	return args
}

// pamRunner runs the PAM helper.
type pamRunner struct{}

func systemPAM() pamRunner { return pamRunner{} }

// account runs pam_acct_mgmt for a in the helper; notice is what PAM said
// when it allowed the login.
func (pamRunner) account(ctx context.Context, h HostRules, a Account) (notice string, err error) {
	path, err := h.helper()
	if err != nil {
		return "", err
	}
	args := h.pamArgs("account", a.User.Name)
	if a.Remote.IsValid() {
		args = append(args, "--rhost", a.Remote.Addr().Unmap().WithZone("").String())
	}
	var out, errOut bytes.Buffer
	cmd := &exec.Cmd{Path: path, Args: args, Env: helperEnv, Stdout: &out, Stderr: &errOut}
	err = runContext(ctx, cmd)
	msg := strings.TrimSpace(out.String())
	if len(msg) > maxPAMMessage {
		msg = msg[:maxPAMMessage]
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == pamproto.ExitRefused {
			return "", &ClientError{Msg: msg, Err: fmt.Errorf("%w: PAM service %s: %s", ErrAccountRefused, h.PAMService, strings.TrimSpace(errOut.String()))}
		}
		return "", fmt.Errorf("session: PAM account check: %w: %s", err, strings.TrimSpace(errOut.String()))
	}
	return msg, nil
}

// runContext runs cmd, killing it when ctx is done.
func runContext(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			cmd.Process.Kill()
		case <-done:
		}
	}()
	return cmd.Wait()
}

// pamSession is a running session helper: the server's ends of its pipes.
type pamSession struct {
	spec    *os.File
	reports *bufio.Reader
	report  *os.File
}

// startPAMSession starts the session helper for u with cmd's stdio (cmd
// becomes the helper's command), and returns once PAM's session is open,
// with PAM's environment.
func startPAMSession(ctx context.Context, h HostRules, cmd *exec.Cmd, u *User, r Request, tty string) (*pamSession, []string, error) {
	path, err := h.helper()
	if err != nil {
		return nil, nil, err
	}
	args := h.pamArgs("session", u.Name)
	args = append(args, "--uid", u.Uid)
	if r.Remote.IsValid() {
		args = append(args, "--rhost", r.Remote.Addr().Unmap().WithZone("").String())
	}
	if tty != "" {
		args = append(args, "--tty", tty)
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		specR.Close()
		specW.Close()
		return nil, nil, err
	}
	cmd.Path, cmd.Args, cmd.Env, cmd.Dir = path, args, helperEnv, "/"
	// Its own process group: signals meant for the server's terminal do not
	// reach it, and it stays in the server's session (a module opening the
	// terminal cannot make it the helper's controlling terminal).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = []*os.File{specR, repW} // fds 3 and 4 (pamproto)
	err = cmd.Start()
	specR.Close()
	repW.Close()
	ps := &pamSession{spec: specW, report: repR, reports: bufio.NewReader(repR)}
	if err != nil {
		ps.close()
		return nil, nil, fmt.Errorf("session: start %s: %w", path, err)
	}
	rep, err := ps.next(ctx, cmd)
	if err != nil {
		ps.close()
		return nil, nil, err
	}
	if rep.Warning != "" {
		discardLogger(r.Logger).Info("session: PAM", "local_user", u.Name, "warning", rep.Warning)
	}
	return ps, rep.Env, nil
}

// next reads the helper's next report; an Error report or a helper that
// ended is an error (a *ClientError when the helper gave a message).
func (ps *pamSession) next(ctx context.Context, cmd *exec.Cmd) (pamproto.Report, error) {
	type result struct {
		line []byte
		err  error
	}
	c := make(chan result, 1)
	go func() {
		line, err := ps.reports.ReadBytes('\n')
		c <- result{line, err}
	}()
	var res result
	select {
	case res = <-c:
	case <-ctx.Done():
		cmd.Process.Kill()
		cmd.Wait()
		return pamproto.Report{}, ctx.Err()
	}
	var rep pamproto.Report
	if res.err == nil {
		res.err = json.Unmarshal(res.line, &rep)
	}
	if res.err != nil || rep.Error != "" {
		cmd.Wait()
		err := res.err
		if rep.Error != "" {
			err = errors.New(rep.Error)
		}
		err = fmt.Errorf("session: PAM helper: %w (%v)", err, cmd.ProcessState)
		if rep.ClientMsg != "" {
			return rep, &ClientError{Msg: rep.ClientMsg, Err: err}
		}
		return rep, err
	}
	return rep, nil
}

// startProgram sends the program to the helper and returns its pid. It
// waits for the helper's answer whatever ctx says, which comes as soon as
// the program started: a pid not read would leave the program running
// unseen; once it is known, the session's context ends it as any other.
func (ps *pamSession) startProgram(cmd *exec.Cmd, spec pamproto.Spec) (int, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return 0, err
	}
	if _, err := ps.spec.Write(append(b, '\n')); err != nil {
		cmd.Wait() // it ended
		return 0, fmt.Errorf("session: PAM helper: %w", err)
	}
	rep, err := ps.next(context.Background(), cmd)
	if err != nil {
		return 0, err
	}
	if rep.Pid <= 0 {
		return 0, fmt.Errorf("session: PAM helper reported no pid")
	}
	return rep.Pid, nil
}

// waitExit waits for the report of the program's end; ok is false when
// the helper ended without one.
func (ps *pamSession) waitExit() (status syscall.WaitStatus, ok bool) {
	for {
		line, err := ps.reports.ReadBytes('\n')
		if err != nil {
			return 0, false
		}
		var rep pamproto.Report
		if json.Unmarshal(line, &rep) == nil && rep.Exited {
			return syscall.WaitStatus(rep.Status), true
		}
	}
}

func (ps *pamSession) close() {
	ps.spec.Close()
	ps.report.Close()
}
