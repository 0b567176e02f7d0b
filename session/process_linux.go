package session

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sshSignals maps RFC 4254 §6.10 signal names to signals.
var sshSignals = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT, "ALRM": syscall.SIGALRM, "FPE": syscall.SIGFPE,
	"HUP": syscall.SIGHUP, "ILL": syscall.SIGILL, "INT": syscall.SIGINT,
	"KILL": syscall.SIGKILL, "PIPE": syscall.SIGPIPE, "QUIT": syscall.SIGQUIT,
	"SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

// signalName is sshd's sig2name: the RFC name, else "SIG@openssh.com".
func signalName(sig syscall.Signal) string {
	for name, s := range sshSignals {
		if s == sig {
			return name
		}
	}
	return "SIG@openssh.com"
}

func exitOf(ps *os.ProcessState) Exit {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok {
		return Exit{Code: ps.ExitCode()}
	}
	return exitOfStatus(ws)
}

func exitOfStatus(ws syscall.WaitStatus) Exit {
	if ws.Signaled() {
		return Exit{Code: 128 + int(ws.Signal()), Signal: signalName(ws.Signal()), CoreDumped: ws.CoreDump()}
	}
	return Exit{Code: ws.ExitStatus()}
}

// Pid returns the process id of the session's first process, which leads
// its process group and session.
func (p *Process) Pid() int { return p.pid }

// TTY returns the path of the session's terminal ("/dev/pts/3"), or ""
// without a Pty.
func (p *Process) TTY() string { return p.tty }

// Wait waits until the session's first process has exited and its output
// has been copied to Request.Stdout and Request.Stderr, and returns how it
// ended. It may be called more than once and from several goroutines.
// The error is nil unless the PAM helper ended without reporting how
// the program ended (then Exit has code 255).
func (p *Process) Wait() (Exit, error) {
	<-p.done
	return p.exit, p.err
}

// Done returns a channel closed when Wait would return.
func (p *Process) Done() <-chan struct{} { return p.done }

// Resize sets the terminal size (TIOCSWINSZ); the foreground processes
// get SIGWINCH. Without a Pty it returns ErrNoPty.
func (p *Process) Resize(cols, rows, width, height uint32) error {
	if p.ptmx == nil {
		return ErrNoPty
	}
	ws := &unix.Winsize{Col: clamp16(cols), Row: clamp16(rows), Xpixel: clamp16(width), Ypixel: clamp16(height)}
	return p.ptmxIoctl(func(fd int) error { return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws) })
}

// Break sends a break on the terminal, as sshd does: tcsendbreak on the
// pty master, ignoring the requested length (a pty has no line, so Linux
// makes this a no-op that reports success). Without a Pty it returns
// ErrNoPty, as sshd refuses the request.
func (p *Process) Break(ms uint32) error {
	if p.ptmx == nil {
		return ErrNoPty
	}
	return p.ptmxIoctl(func(fd int) error { return unix.IoctlSetInt(fd, unix.TCSBRK, 0) })
}

func (p *Process) ptmxIoctl(f func(fd int) error) error {
	rc, err := p.ptmx.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = f(int(fd)) }); err != nil {
		return err
	}
	return ierr
}

// Signal sends the signal named name (an RFC 4254 name without "SIG",
// such as "TERM", "INT", "HUP", "KILL", "USR1") to the process group of
// the session's first process, with the session user's permissions, as
// sshd does. Like sshd it refuses subsystem sessions. After the first
// process exited it returns os.ErrProcessDone.
func (p *Process) Signal(name string) error {
	sig, ok := sshSignals[name]
	if !ok {
		return errors.New("session: unsupported signal " + strconv.Quote(name))
	}
	if p.subsystem {
		return errors.New("session: signals to subsystems are refused")
	}
	if p.exited.Load() {
		return os.ErrProcessDone
	}
	return killpgAs(p.uid, p.pid, sig)
}

// killpgAs sends sig to process group pgid as uid (-1: as the server).
// Like sshd's temporarily_use_uid, it switches only the calling thread's
// real and effective uid, keeping the saved uid 0 to switch back.
func killpgAs(uid, pgid int, sig syscall.Signal) error {
	if uid <= 0 {
		return unix.Kill(-pgid, sig)
	}
	runtime.LockOSThread()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), ^uintptr(0)); e != 0 {
		runtime.UnlockOSThread()
		return e
	}
	err := unix.Kill(-pgid, sig)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, ^uintptr(0)); e != 0 {
		// Leave the thread locked: it dies with this goroutine.
		return errors.Join(err, e)
	}
	runtime.UnlockOSThread()
	return err
}

// pamCloseGrace is how long the PAM helper gets to close its session
// after the session was killed.
const pamCloseGrace = 10 * time.Second

// hangUp ends the session when its context is done (start arms it with
// context.AfterFunc, so that it holds no goroutine while the session
// runs: an idle session's memory is mostly goroutine stacks): SIGHUP to
// every process of the session, then SIGKILL to those left, then stops
// waiting for output.
func (p *Process) hangUp() {
	select {
	case <-p.done:
		// Ended: what is left (nohup) was left on purpose, as with sshd.
		return
	default:
	}
	sid := p.pid
	killSession(sid, syscall.SIGHUP)
	waitSessionGone(sid, hangupGrace)
	killSession(sid, syscall.SIGKILL)
	waitSessionGone(sid, hangupGrace) // SIGKILL is delivered, not yet done
	close(p.killed)
	select {
	case <-p.done:
	case <-time.After(hangupGrace):
		// Something outside the session holds the output open.
		p.closeAll()
	}
	if p.pam != nil {
		// The PAM helper closes its session once the program is gone; a
		// module that hangs there must not hold the session forever.
		select {
		case <-p.done:
		case <-time.After(pamCloseGrace):
			p.cmd.Process.Kill()
		}
	}
}

// waitSessionGone waits up to d until no live process is in session sid.
func waitSessionGone(sid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for len(sessionPids(sid)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// killSession sends sig to process group sid and to every process whose
// session is sid (jobs of an interactive shell have their own groups).
func killSession(sid int, sig syscall.Signal) {
	_ = unix.Kill(-sid, sig)
	for _, pid := range sessionPids(sid) {
		_ = unix.Kill(pid, sig)
	}
}

// sessionPids lists the live processes whose session id is sid.
func sessionPids(sid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...; comm may hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 4 || string(f[0]) == "Z" {
			continue
		}
		if s, err := strconv.Atoi(string(f[3])); err == nil && s == sid {
			pids = append(pids, pid)
		}
	}
	return pids
}
