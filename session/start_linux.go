package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/sshmesh/sshmesh/internal/pamproto"
)

// Timings of the end of a session.
const (
	// drainIdle is how long a terminal may stay silent after the shell
	// exited before the session stops reading it.
	drainIdle = 250 * time.Millisecond
	// hangupGrace is how long processes get after SIGHUP, when the
	// context is cancelled, before SIGKILL.
	hangupGrace = time.Second
)

// sftpServers are searched in order when Request.SFTPServer is empty.
var sftpServers = []string{
	"/usr/lib/openssh/sftp-server",
	"/usr/libexec/openssh/sftp-server",
	"/usr/lib/ssh/sftp-server",
	"/usr/libexec/sftp-server",
}

// config is what Start takes from the system; tests replace parts.
type config struct {
	env     envConfig
	records loginRecords
	motd    string
	lastlog string                 // lastlog(5); "" skips it
	audit   func(auditLogin) error // sends auditd's USER_LOGIN record
	sshrc   string                 // /etc/ssh/sshrc, run when ~/.ssh/rc is missing
	current func() (*User, error)  // the user the server runs as
}

func systemConfig() config {
	return config{
		env:     systemEnvConfig(),
		records: systemLoginRecords(),
		motd:    "/etc/motd",
		lastlog: "/var/log/lastlog",
		audit:   sendAuditLogin,
		sshrc:   "/etc/ssh/sshrc",
		current: currentUser,
	}
}

// currentUser is the user of the server's effective uid.
func currentUser() (*User, error) {
	uid := strconv.Itoa(os.Geteuid())
	u := &User{Uid: uid, Name: uid}
	if ou, err := user.LookupId(uid); err == nil {
		u.Name = ou.Username
	}
	return u, nil
}

// Process is a running session.
type Process struct {
	cmd       *exec.Cmd   // the session's first process, or the PAM helper that started it
	pid       int         // the session's first process
	pam       *pamSession // the PAM helper's pipes; nil without PAM
	ptmx      *os.File    // nil without a Pty
	ptyOut    *outputCopy // ptmx's output to the client
	tty       string      // "/dev/pts/N" or ""
	subsystem bool
	uid, gid  int // for Signal; -1 when the server does not switch user
	log       *slog.Logger

	exited atomic.Bool   // the first process has exited
	killed chan struct{} // closed once hangUp has killed the session
	// stopHangUp disarms hangUp once the session has ended (the end of
	// its context then does nothing).
	stopHangUp func() bool
	done       chan struct{}
	exit       Exit
	err        error
	closers    []io.Closer   // parent ends of pipes, closed at the end
	records    *loginRecords // where closeAll records a terminal session's logout; nil without
	closeOnce  sync.Once
	output     sync.WaitGroup
}

// Start starts the session r describes and returns once the child runs.
// Cancelling ctx hangs up and then kills every process of the session.
// Errors a client may see are *ClientError.
func Start(ctx context.Context, r Request) (*Process, error) {
	return start(ctx, r, systemConfig())
}

func start(ctx context.Context, r Request, cfg config) (_ *Process, err error) {
	log := discardLogger(r.Logger).With("local_user", r.User)
	if r.Subsystem != "" && r.Command != "" {
		return nil, errors.New("session: Request.Command must be empty with a Subsystem")
	}
	u, err := LookupUser(r.User)
	if err != nil {
		return nil, err
	}
	if r.UID != "" && u.Uid != r.UID {
		return nil, &ClientError{Msg: fmt.Sprintf("The account %q changed since the login was decided.", r.User),
			Err: fmt.Errorf("session: user %q: uid %s at login, %s now", r.User, r.UID, u.Uid)}
	}
	cur, err := cfg.current()
	if err != nil {
		return nil, fmt.Errorf("session: current user: %w", err)
	}
	if err := permitted(cur, u); err != nil {
		return nil, err
	}
	usePAM := r.HostRules.PAMService != ""
	if usePAM && cur.Uid != "0" {
		return nil, errors.New("session: PAM sessions need a server running as root")
	}
	command := r.Command
	if r.Subsystem != "" {
		if r.Subsystem != "sftp" {
			return nil, &ClientError{Msg: fmt.Sprintf("The subsystem %q is not supported.", r.Subsystem), Err: ErrUnknownSubsystem}
		}
		path, err := findSFTPServer(r.SFTPServer)
		if err != nil {
			return nil, err
		}
		command = shellQuote(path)
	}
	shell := u.Shell
	argv := []string{filepath.Base(shell), "-c", command}
	login := command == "" && r.Subsystem == ""
	if login {
		argv = []string{"-" + filepath.Base(shell)}
	}

	p := &Process{subsystem: r.Subsystem != "", uid: -1, gid: -1, log: log,
		killed: make(chan struct{}), done: make(chan struct{})}
	attr := &syscall.SysProcAttr{Setsid: true}
	if cur.Uid == "0" {
		cred, err := credential(u)
		if err != nil {
			return nil, err
		}
		attr.Credential = cred
		p.uid, p.gid = int(cred.Uid), int(cred.Gid)
	}
	cmd := &exec.Cmd{Path: shell, Args: argv, SysProcAttr: attr}
	p.cmd = cmd

	// The files the child gets; closed in the parent once it started.
	var childFiles []*os.File
	defer func() {
		for _, f := range childFiles {
			f.Close()
		}
		if err != nil {
			p.closeAll()
		}
	}()
	stdout, stderr := orDiscard(r.Stdout), orDiscard(r.Stderr)
	var msgOut io.Writer // where sshd's own messages (motd, chdir) go
	term := ""
	if r.Pty != nil {
		ptmx, tty, err := openPty()
		if err != nil {
			return nil, fmt.Errorf("session: open pty: %w", err)
		}
		p.ptmx, p.tty = ptmx, tty.Name()
		childFiles = append(childFiles, tty)
		p.output.Add(1)
		p.ptyOut, err = startOutputCopy(ptmx, false, stdout, p.output.Done)
		if err != nil {
			ptmx.Close()
			p.output.Done()
			return nil, err
		}
		p.closers = append(p.closers, p.ptyOut)
		setupPty(tty, r.Pty, u, cur.Uid == "0", log)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		attr.Setctty, attr.Ctty = true, 0
		msgOut = tty
		term = r.Pty.Term
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		p.closers = append(p.closers, inW)
		childFiles = append(childFiles, inR)
		cmd.Stdin = inR
		for i, w := range []io.Writer{stdout, stderr} {
			pr, pw, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			childFiles = append(childFiles, pw)
			if i == 0 {
				cmd.Stdout = pw
			} else {
				cmd.Stderr, msgOut = pw, pw
			}
			p.output.Add(1)
			c, err := startOutputCopy(pr, true, w, p.output.Done)
			if err != nil {
				pr.Close()
				p.output.Done()
				return nil, err
			}
			p.closers = append(p.closers, c)
		}
		if r.Stdin == nil {
			inW.Close()
		} else {
			go func() {
				_, _ = copyToPipe(inW, r.Stdin)
				inW.Close()
			}()
		}
	}
	var pamEnv []string
	if usePAM {
		markCloseOnExec(log)
		resetIgnoredSignals()
		p.pam, pamEnv, err = startPAMSession(ctx, r.HostRules, cmd, u, r, p.tty)
		if err != nil {
			return nil, err
		}
	}
	ep := envParams{user: u, term: term, tty: p.tty, local: r.Local, peer: r.Remote}
	if r.Pty != nil {
		ep.utf8 = declaresUTF8(r.Pty.Modes)
	}
	env := buildEnv(cfg.env, ep, pamEnv, r.Env, r.ExtraEnv)

	// sshd's PrintLastLog and PrintMotd, for interactive logins; with PAM
	// the motd is pam_motd's to show.
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	if login && r.Pty != nil && !hushLogin(u.Home) {
		if r.Notice != "" {
			fmt.Fprintln(msgOut, strings.TrimRight(r.Notice, "\n"))
		}
		if last, ok := readLastlog(cfg.lastlog, uint32(uid)); ok {
			printLastLogin(msgOut, last)
		}
		if !usePAM {
			printMotd(msgOut, cfg.motd)
		}
	}
	if usePAM {
		dir := u.Home
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			if err == nil {
				err = syscall.ENOTDIR
			}
			noHomeMessage(msgOut, dir, err)
			dir = "/"
		}
		spec := pamproto.Spec{Path: shell, Args: argv, Env: env, Dir: dir, Setctty: r.Pty != nil}
		if rc := userRC(u, cfg.sshrc); rc != "" {
			spec.RC = rcArgs(shell, rc)
		}
		p.pid, err = p.pam.startProgram(cmd, spec)
		if err != nil {
			p.pam.close()
			return nil, err
		}
	} else {
		cmd.Env = env
		markCloseOnExec(log)
		resetIgnoredSignals()
		start := func() error {
			if rc := userRC(u, cfg.sshrc); rc != "" {
				runRC(cmd, rcArgs(shell, rc), u.Home, log)
			}
			return startInHome(cmd, u.Home, msgOut)
		}
		if cur.Uid == "0" {
			err = startAsLogin(u.Uid, start, log)
		} else {
			err = start()
		}
		if err != nil {
			return nil, fmt.Errorf("session: start %s for %s: %w", shell, u.Name, err)
		}
		p.pid = cmd.Process.Pid
	}
	pid := p.pid
	log.Debug("session started", "pid", pid, "tty", p.tty, "command", command, "pam", usePAM)
	if cur.Uid == "0" {
		sendAudit(cfg.audit, auditLogin{user: u.Name, addr: r.Remote.Addr(), terminal: p.tty, success: true}, log)
	}

	if p.ptmx != nil {
		// sshd records every session with a terminal, shell or command.
		recs := cfg.records
		p.records = &recs // closeAll records the logout
		rec := newUtmp(utUserProcess, pid, p.tty, u.Name, r.Remote.Addr(), time.Now())
		if err := cfg.records.record(rec); err != nil {
			// Expected when the server is not root: only debug then.
			level := slog.LevelWarn
			if errors.Is(err, os.ErrPermission) {
				level = slog.LevelDebug
			}
			log.Log(ctx, level, "session: login record", "err", err)
		}
		if err := writeLastlog(cfg.lastlog, uint32(uid), p.tty, r.Remote.Addr(), time.Now()); err != nil {
			log.Warn("session: lastlog", "err", err)
		}
	}
	if r.Pty != nil && r.Stdin != nil {
		go func() { _, _ = copyToFile(p.ptmx, r.Stdin) }()
	}
	p.stopHangUp = context.AfterFunc(ctx, p.hangUp)
	if p.pam != nil || !whenExited(p.pid, func() { p.wait(ctx) }) {
		go p.wait(ctx)
	}
	return p, nil
}

// credential is u's uid, gid and groups for SysProcAttr.
func credential(u *User) (*syscall.Credential, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("session: user %s: uid %q: %w", u.Name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("session: user %s: gid %q: %w", u.Name, u.Gid, err)
	}
	c := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	for _, g := range u.Groups {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("session: user %s: group %q: %w", u.Name, g, err)
		}
		c.Groups = append(c.Groups, uint32(n))
	}
	return c, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func findSFTPServer(path string) (string, error) {
	cands := sftpServers
	if path != "" {
		cands = []string{path}
	}
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", &ClientError{Msg: "This host has no SFTP server.", Err: ErrNoSFTPServer}
}

// shellQuote quotes s for sh -c.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// noHomeMessage writes sshd's message for a home it cannot change into.
func noHomeMessage(msg io.Writer, home string, err error) {
	var errno syscall.Errno
	text := err.Error()
	if errors.As(err, &errno) {
		text = errno.Error()
	}
	if text != "" {
		text = strings.ToUpper(text[:1]) + text[1:]
	}
	fmt.Fprintf(msg, "Could not chdir to home directory %s: %s\n", home, text)
}

// startInHome starts cmd in home, or in "/" with sshd's message on msg
// when the user cannot change into it.
func startInHome(cmd *exec.Cmd, home string, msg io.Writer) error {
	noHome := func(err error) {
		noHomeMessage(msg, home, err)
		cmd.Dir = "/"
	}
	st, err := os.Stat(home)
	switch {
	case err != nil:
		noHome(err)
	case !st.IsDir():
		noHome(syscall.ENOTDIR)
	default:
		cmd.Dir = home
	}
	err = cmd.Start()
	if err == nil || cmd.Dir == "/" {
		return err
	}
	// The child changes directory after switching user: a failure there
	// shows as the start's errno. If "/" works, that was it.
	var errno syscall.Errno
	if !errors.As(err, &errno) || (errno != syscall.EACCES && errno != syscall.ENOENT &&
		errno != syscall.ENOTDIR && errno != syscall.ELOOP) {
		return err
	}
	retry := &exec.Cmd{Path: cmd.Path, Args: cmd.Args, Env: cmd.Env, Stdin: cmd.Stdin,
		Stdout: cmd.Stdout, Stderr: cmd.Stderr, SysProcAttr: cmd.SysProcAttr}
	noHome(errno)
	retry.Dir = "/"
	if err2 := retry.Start(); err2 != nil {
		return err
	}
	*cmd = *retry
	return nil
}

// hushLogin reports whether ~/.hushlogin exists, which silences the last
// login and the motd, as with sshd.
func hushLogin(home string) bool {
	_, err := os.Stat(filepath.Join(home, ".hushlogin"))
	return err == nil
}

// printMotd copies /etc/motd to w, as sshd's PrintMotd.
func printMotd(w io.Writer, motd string) {
	b, err := os.ReadFile(motd)
	if err != nil {
		return
	}
	_, _ = w.Write(b)
}

// openPty opens a pseudo-terminal pair. The master is returned in
// non-blocking mode so reads can have deadlines.
func openPty() (ptmx, tty *os.File, err error) {
	m, t, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	// creack/pty used m.Fd(), which made it blocking; take a pollable copy.
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	m.Close()
	if err != nil {
		t.Close()
		return nil, nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		t.Close()
		return nil, nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), t, nil
}

// setupPty applies the size and modes of req to tty and, when the server
// is root, gives it to u (group tty, mode 0620) as sshd's pty_setowner.
// Failures are logged: the session still works.
func setupPty(tty *os.File, req *Pty, u *User, root bool, log *slog.Logger) {
	fd := int(tty.Fd())
	if w := req.Window; w.Cols != 0 || w.Rows != 0 {
		ws := &unix.Winsize{Col: clamp16(w.Cols), Row: clamp16(w.Rows), Xpixel: clamp16(w.Width), Ypixel: clamp16(w.Height)}
		if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws); err != nil {
			log.Warn("session: set pty size", "err", err)
		}
	}
	if len(req.Modes) > 0 {
		if modes, err := ParseModes(req.Modes); err != nil {
			log.Warn("session: terminal modes ignored", "err", err)
		} else if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
			log.Warn("session: get terminal modes", "err", err)
		} else {
			applyModes(t, modes)
			if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
				log.Warn("session: set terminal modes", "err", err)
			}
		}
	}
	if !root {
		return
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	mode := os.FileMode(0o600)
	if g, err := user.LookupGroup("tty"); err == nil {
		gid, _ = strconv.Atoi(g.Gid)
		mode = 0o620
	}
	if err := os.Chown(tty.Name(), uid, gid); err != nil {
		log.Warn("session: chown pty", "err", err)
	}
	if err := os.Chmod(tty.Name(), mode); err != nil {
		log.Warn("session: chmod pty", "err", err)
	}
}

func clamp16(v uint32) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}

// wait reaps the child, drains its output and ends the session. start
// runs it once the child has exited (whenExited), or at once to wait for
// it (with PAM, or without a pidfd).
func (p *Process) wait(ctx context.Context) {
	var pamStatus syscall.WaitStatus
	pamExited := false
	if p.pam != nil {
		// The helper reports the program's end, then closes the PAM
		// session and exits.
		pamStatus, pamExited = p.pam.waitExit()
	} else {
		_ = p.cmd.Wait() // at once after whenExited
	}
	p.exited.Store(true)
	if p.ptyOut != nil {
		p.ptyOut.endWhenQuiet(drainIdle)
	}
	p.output.Wait()
	if ctx.Err() != nil {
		<-p.killed // no process of the session is left when Wait returns
	}
	p.closeAll()
	if p.pam != nil {
		_ = p.cmd.Wait()
		p.pam.close()
	}
	switch {
	case pamExited:
		p.exit = exitOfStatus(pamStatus)
	case p.pam != nil:
		// The helper ended without reporting the program's end.
		p.err = fmt.Errorf("session: PAM helper ended early: %v", p.cmd.ProcessState)
		p.exit = Exit{Code: 255}
	default:
		p.exit = exitOf(p.cmd.ProcessState)
	}
	close(p.done)
	p.stopHangUp()
}

// closeAll closes the parent's ends of the session's pipes or terminal,
// once; a terminal session's logout record is written first, as sshd does:
// once closed, the terminal's number may go to another login, whose record
// this one would end.
func (p *Process) closeAll() {
	p.closeOnce.Do(func() {
		if p.records != nil {
			rec := newUtmp(utDeadProcess, p.pid, p.tty, "", netip.Addr{}, time.Now())
			if err := p.records.record(rec); err != nil {
				p.log.Warn("session: logout record", "err", err)
			}
		}
		for _, c := range p.closers {
			c.Close()
		}
	})
}

// markCloseOnExec sets close-on-exec on every descriptor of the server
// from 3 up, so none leaks into the child, as sshd's closefrom(3). Go
// opens its own with close-on-exec; this catches those the server
// inherited from its parent or that C code opened without it.
func markCloseOnExec(log *slog.Logger) {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return
	}
	// Before Linux 5.11: one by one.
	ents, rerr := os.ReadDir("/proc/self/fd")
	if rerr != nil {
		log.Warn("session: cannot mark descriptors close-on-exec", "err", errors.Join(err, rerr))
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}
