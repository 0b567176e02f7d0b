//go:build linux

package session

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// encodeModes encodes modes in opcode order as an OpenSSH client does.
func encodeModes(m ssh.TerminalModes) []byte {
	var b []byte
	for op := 1; op < 256; op++ {
		if v, ok := m[uint8(op)]; ok {
			b = append(b, uint8(op))
			b = binary.BigEndian.AppendUint32(b, v)
		}
	}
	return append(b, ttyOpEnd)
}

func TestPtyTTY(t *testing.T) {
	u := testUser(t)
	var out testkit.Buffer
	ctx := t.Context()
	p, err := start(ctx, Request{User: u.Name, Command: `tty; echo "SSH_TTY=$SSH_TTY TERM=$TERM"; exec sleep 30`,
		Pty: &Pty{Term: "xterm-256color"}, Stdout: &out}, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	out.WaitFor(t, "TERM=")
	if !regexp.MustCompile(`^/dev/pts/\d+$`).MatchString(p.TTY()) {
		t.Fatalf("TTY() = %q", p.TTY())
	}
	want := fmt.Sprintf("%s\r\nSSH_TTY=%s TERM=xterm-256color\r\n", p.TTY(), p.TTY())
	if got := out.String(); got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	// Only 0, 1 and 2, all the terminal. The shell has just exec'd sleep,
	// whose start-up (the dynamic loader, the locale) opens and closes
	// files of its own: a cold machine showed one as fd 3 (closed before
	// it could be read). A descriptor the session leaked stays open, so
	// the look is repeated until the set is right, for up to 10 s.
	onTTY := func(fds map[string]string) bool {
		return len(fds) == 3 && fds["0"] == p.TTY() && fds["1"] == p.TTY() && fds["2"] == p.TTY()
	}
	fds := childFds(t, p.Pid())
	for deadline := time.Now().Add(10 * time.Second); !onTTY(fds) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		fds = childFds(t, p.Pid())
	}
	if !onTTY(fds) {
		t.Errorf("child fds = %v, want 0, 1, 2 on %s", fds, p.TTY())
	}
	if err := p.Break(500); err != nil {
		t.Errorf("Break: %v", err)
	}
	if err := p.Signal("KILL"); err != nil {
		t.Fatal(err)
	}
	exit, _ := p.Wait()
	if exit != (Exit{Code: 137, Signal: "KILL"}) {
		t.Errorf("exit = %+v, want KILL", exit)
	}
}

func TestPtySizeAndResize(t *testing.T) {
	u := testUser(t)
	var out testkit.Buffer
	p, err := start(t.Context(), Request{User: u.Name,
		Command: `stty size; trap 'stty size; exit 3' WINCH; echo READY; while :; do sleep 0.05; done`,
		Pty:     &Pty{Term: "xterm", Window: Window{Cols: 80, Rows: 24, Width: 640, Height: 480}}, Stdout: &out}, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	out.WaitFor(t, "READY")
	if err := p.Resize(132, 43, 0, 0); err != nil {
		t.Fatal(err)
	}
	exit, _ := p.Wait()
	if want := "24 80\r\nREADY\r\n43 132\r\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	if exit.Code != 3 {
		t.Errorf("exit = %+v, want 3 from the WINCH trap", exit)
	}
}

func TestPtyModes(t *testing.T) {
	u := testUser(t)
	modes := encodeModes(ssh.TerminalModes{
		ssh.VINTR: 0x18, ssh.VERASE: 0x08, ssh.VKILL: 255, ssh.ECHO: 0, ssh.ICRNL: 0,
		ssh.IUTF8: 1, ssh.IXANY: 1, ssh.ONLCR: 1, ssh.TOSTOP: 1,
		ssh.TTY_OP_ISPEED: 9600, ssh.TTY_OP_OSPEED: 9600,
	})
	res := run(t, testConfig(t), Request{User: u.Name, Command: "stty -a", Pty: &Pty{Term: "xterm", Modes: modes}})
	for _, want := range []string{"speed 9600 baud", "intr = ^X;", "erase = ^H;", "kill = <undef>;",
		" -echo ", " -icrnl ", " iutf8", " ixany ", " onlcr ", " tostop "} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("stty -a lacks %q:\n%s", want, res.stdout)
		}
	}
	// Malformed modes are ignored as a whole, as sshd does.
	res = run(t, testConfig(t), Request{User: u.Name, Command: "stty -a", Pty: &Pty{Modes: []byte{ssh.ECHO, 0, 0}}})
	if !strings.Contains(res.stdout, " echo ") {
		t.Errorf("truncated modes changed the terminal:\n%s", res.stdout)
	}
}

func TestLoginShellMotdUtmp(t *testing.T) {
	u := testUser(t)
	cfg := testConfig(t)
	writeFile(t, cfg.motd, "Welcome to the mesh.\n")
	stdin, typed := io.Pipe()
	var out testkit.Buffer
	r := Request{User: u.Name, Pty: &Pty{Term: "dumb", Window: Window{Cols: 80, Rows: 24}}, Stdin: stdin, Stdout: &out,
		Remote: mustAddrPort("100.64.0.7:51234"), Local: mustAddrPort("100.64.0.1:22")}
	p, err := start(t.Context(), r, cfg)
	if err != nil {
		t.Fatal(err)
	}
	out.WaitFor(t, "Welcome to the mesh.\r\n")
	line := strings.TrimPrefix(p.TTY(), "/dev/")
	who := command(t, "who", cfg.records.utmp)
	if !regexp.MustCompile(regexp.QuoteMeta(u.Name) + `\s+` + regexp.QuoteMeta(line) + `\s.*\(100\.64\.0\.7\)`).MatchString(who) {
		t.Errorf("who %s = %q, want %s on %s from 100.64.0.7", cfg.records.utmp, who, u.Name, line)
	}
	fmt.Fprintf(typed, "echo \"argv0=$0\"; exit 7\n")
	exit, _ := p.Wait()
	if exit.Code != 7 {
		t.Errorf("exit = %+v, want 7", exit)
	}
	if !strings.Contains(out.String(), "argv0=-bash") {
		t.Errorf("output %q lacks argv0=-bash", out.String())
	}
	if who := command(t, "who", cfg.records.utmp); strings.Contains(who, u.Name) {
		t.Errorf("after logout who = %q", who)
	}
	last := command(t, "last", "-f", cfg.records.wtmp)
	if !regexp.MustCompile(regexp.QuoteMeta(u.Name[:8])+`\S*\s+`+regexp.QuoteMeta(line)+`\s+100\.64\.0\.7`).MatchString(last) ||
		strings.Contains(last, "still logged in") {
		t.Errorf("last -f %s = %q, want a finished session of %s on %s from 100.64.0.7", cfg.records.wtmp, last, u.Name, line)
	}

	// ~/.hushlogin silences the motd; a command never shows it.
	writeFile(t, u.Home+"/.hushlogin", "")
	res := run(t, cfg, Request{User: u.Name, Pty: &Pty{}, Stdin: strings.NewReader("exit\n")})
	if strings.Contains(res.stdout, "Welcome") {
		t.Errorf("motd despite .hushlogin: %q", res.stdout)
	}
}

// A background job that keeps the terminal open must not hold the
// session once the shell exited (sshd closes the pty then), whether the
// shell's last output was just before its exit or long before, and also
// when the session's output is not on the process's watcher.
func TestPtyBackgroundHolder(t *testing.T) {
	u := testUser(t)
	for _, command := range []string{
		`(trap '' HUP; exec sleep 1000) & echo bye`,
		`(trap '' HUP; exec sleep 1000) & echo bye; sleep 1`,
		"no watcher",
	} {
		if command == "no watcher" {
			refuseWatches(t)
			command = `(trap '' HUP; exec sleep 1000) & echo bye; sleep 1.5`
		}
		var out testkit.Buffer
		p, err := start(t.Context(), Request{User: u.Name, Pty: &Pty{}, Command: command, Stdout: &out}, testConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		sid := p.Pid()
		t.Cleanup(func() { killSession(sid, 9) })
		done := make(chan Exit)
		go func() { e, _ := p.Wait(); done <- e }()
		select {
		case e := <-done:
			if e.Code != 0 || out.String() != "bye\r\n" {
				t.Errorf("%s: exit %+v output %q", command, e, out.String())
			}
		case <-time.After(30 * time.Second): // it returns at once; the job holds the pty for 1000 s
			t.Fatalf("%s: Wait did not return while a background job held the pty", command)
		}
	}
}

// A terminal session whose processes close their copies of the terminal
// keeps it until the session ends: it is not hung up under them (the
// shell would get SIGHUP), and its number does not go to another login
// (whose login record this session's logout would then end).
func TestPtyClosedStdioKeepsTheTerminal(t *testing.T) {
	u := testUser(t)
	cfg := testConfig(t)
	ready := filepath.Join(u.Home, "ready")
	a, err := start(t.Context(), Request{User: u.Name, Pty: &Pty{},
		Command: "exec </dev/null >/dev/null 2>&1; touch " + ready + "; sleep 2"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case <-a.Done():
			exit, _ := a.Wait()
			t.Fatalf("the session ended with %+v once it closed its terminal, want it to run on", exit)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the session did not close its terminal within 20 s")
		}
	}
	time.Sleep(300 * time.Millisecond) // the copy reads the terminal's end (EIO)
	b, err := start(t.Context(), Request{User: u.Name, Pty: &Pty{}, Command: "true"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a.TTY() == b.TTY() {
		t.Errorf("a second login got %s while the first session still ran on it", b.TTY())
	}
	b.Wait()
	exit, _ := a.Wait()
	if exit.Code != 0 || exit.Signal != "" {
		t.Errorf("the session ended with %+v, want code 0 (not hung up)", exit)
	}
}

// A terminal session that is hung up (its context ended) while its client
// has stopped reading records its logout before its terminal is closed:
// the terminal's number may then go to another login, whose record a late
// logout of this session would end.
func TestHangUpRecordsLogoutFirst(t *testing.T) {
	u := testUser(t)
	cfg := testConfig(t)
	stuck := &stuckWriter{called: make(chan struct{}), release: make(chan struct{})}
	defer stuck.unblock()
	ctx, cancel := context.WithCancel(t.Context())
	a, err := start(ctx, Request{User: u.Name, Pty: &Pty{}, Stdout: stuck, Command: "exec yes"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-stuck.called:
	case <-time.After(20 * time.Second):
		t.Fatal("no output within 20 s")
	}
	lineA := strings.TrimPrefix(a.TTY(), "/dev/")
	cancel() // the session is hung up; its output copy stays in Write
	for deadline := time.Now().Add(20 * time.Second); strings.Contains(command(t, "who", cfg.records.utmp), lineA); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still logged in 20 s after the session was hung up", lineA)
		}
	}
	b, err := start(t.Context(), Request{User: u.Name, Pty: &Pty{}, Command: "sleep 600"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killSession(b.Pid(), 9) })
	stuck.unblock() // the first session's copy fails now and its wait ends
	a.Wait()
	lineB := strings.TrimPrefix(b.TTY(), "/dev/")
	if who := command(t, "who", cfg.records.utmp); !strings.Contains(who, lineB) {
		t.Errorf("who = %q after the first session ended, want the second login on %s (the first was on %s)", who, lineB, lineA)
	}
}

// stuckWriter's Write blocks until unblock, then fails: a client that
// stopped reading.
type stuckWriter struct {
	called, release chan struct{}
	once, onceR     sync.Once
}

func (w *stuckWriter) Write([]byte) (int, error) {
	w.once.Do(func() { close(w.called) })
	<-w.release
	return 0, errors.New("the client went away")
}

func (w *stuckWriter) unblock() { w.onceR.Do(func() { close(w.release) }) }
