//go:build linux

package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

func TestExitCodesAndSignals(t *testing.T) {
	u := testUser(t)
	tests := []struct {
		command string
		want    Exit
	}{
		{"exit 0", Exit{}},
		{"exit 1", Exit{Code: 1}},
		{"exit 42", Exit{Code: 42}},
		{"exit 255", Exit{Code: 255}},
		{"kill -TERM $$", Exit{Code: 143, Signal: "TERM"}},
		{"kill -USR1 $$", Exit{Code: 138, Signal: "USR1"}},
		{"kill -WINCH $$; kill -URG $$; kill -TTIN $$; kill -CONT $$; kill -PWR $$", Exit{Code: 158, Signal: "SIG@openssh.com"}},
	}
	for _, pty := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("pty=%v/%s", pty, tt.command), func(t *testing.T) {
				r := Request{User: u.Name, Command: tt.command}
				if pty {
					r.Pty = &Pty{}
				}
				if res := run(t, testConfig(t), r); res.exit != tt.want {
					t.Errorf("exit = %+v, want %+v", res.exit, tt.want)
				}
			})
		}
	}
	t.Run("core", func(t *testing.T) {
		// ulimit -c may be 0; only the signal is certain.
		res := run(t, testConfig(t), Request{User: u.Name, Command: "kill -SEGV $$"})
		if res.exit.Signal != "SEGV" || res.exit.Code != 139 {
			t.Errorf("exit = %+v, want SEGV", res.exit)
		}
	})
}

func TestSignal(t *testing.T) {
	u := testUser(t)
	for _, name := range []string{"TERM", "INT", "HUP", "KILL", "USR1"} {
		t.Run(name, func(t *testing.T) {
			var out testkit.Buffer
			// Two processes of the group (bash and sleep): both get it.
			p, err := start(t.Context(), Request{User: u.Name, Stdout: &out,
				Command: "echo READY; sleep 100; echo not reached"}, testConfig(t))
			if err != nil {
				t.Fatal(err)
			}
			out.WaitFor(t, "READY")
			if err := p.Signal(name); err != nil {
				t.Fatal(err)
			}
			exit, _ := p.Wait()
			if exit.Signal != name {
				t.Errorf("exit = %+v, want signal %s", exit, name)
			}
			if err := p.Signal(name); !errors.Is(err, os.ErrProcessDone) {
				t.Errorf("Signal after exit = %v", err)
			}
		})
	}
	p, err := start(t.Context(), Request{User: u.Name, Command: "true"}, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal("WINCH"); err == nil {
		t.Error("Signal(WINCH) = nil, want unsupported")
	}
	if err := p.Break(0); !errors.Is(err, ErrNoPty) {
		t.Errorf("Break without pty = %v, want ErrNoPty", err)
	}
	if err := p.Resize(1, 1, 0, 0); !errors.Is(err, ErrNoPty) {
		t.Errorf("Resize without pty = %v, want ErrNoPty", err)
	}
	p.Wait()
}

func TestPipes(t *testing.T) {
	u := testUser(t)
	var in = strings.NewReader("from stdin\n")
	var out, errOut testkit.Buffer
	p, err := start(t.Context(), Request{User: u.Name, Stdin: in, Stdout: &out, Stderr: &errOut,
		Command: "cat; echo out; echo err >&2; ls /proc/$$/fd; exit 5"}, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	exit, _ := p.Wait()
	if want := "from stdin\nout\n0\n1\n2\n"; out.String() != want {
		t.Errorf("stdout %q, want %q (fds 0,1,2 only)", out.String(), want)
	}
	if errOut.String() != "err\n" || exit.Code != 5 {
		t.Errorf("stderr %q exit %+v", errOut.String(), exit)
	}
}

func TestLargeOutput(t *testing.T) {
	u := testUser(t)
	dir, err := os.MkdirTemp("", "sshmesh-session-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 10<<20)
	rand.Read(data)
	file := filepath.Join(dir, "data")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	for _, pty := range []bool{false, true} {
		t.Run(fmt.Sprintf("pty=%v", pty), func(t *testing.T) {
			h := sha256.New()
			n := &countWriter{w: h}
			r := Request{User: u.Name, Command: "cat " + file, Stdout: n}
			if pty {
				// Raw output, so bytes pass the line discipline as they are.
				r.Pty = &Pty{Modes: encodeModes(ssh.TerminalModes{ssh.OPOST: 0})}
			}
			res := run(t, testConfig(t), r)
			if res.exit != (Exit{}) || n.n != len(data) || [32]byte(h.Sum(nil)) != want {
				t.Errorf("exit %+v, got %d bytes, sha256 match %v", res.exit, n.n, [32]byte(h.Sum(nil)) == want)
			}
		})
	}
}

type countWriter struct {
	w io.Writer
	n int
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += len(p)
	return c.w.Write(p)
}

func TestContextCancelKillsSession(t *testing.T) {
	u := testUser(t)
	for _, pty := range []bool{false, true} {
		t.Run(fmt.Sprintf("pty=%v", pty), func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			var out testkit.Buffer
			r := Request{User: u.Name, Stdout: &out,
				Command: `sleep 1000 & (trap '' HUP; exec sleep 1001) & setsid sleep 1002 & echo READY; sleep 1003`}
			if pty {
				r.Pty = &Pty{}
			}
			p, err := start(ctx, r, testConfig(t))
			if err != nil {
				t.Fatal(err)
			}
			out.WaitFor(t, "READY")
			pids := userPids(t, u.Uid)
			if len(pids) < 4 {
				t.Fatalf("user processes %v, want at least 4", pids)
			}
			cancel()
			done := make(chan struct{})
			go func() { p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Wait did not return after cancel")
			}
			// setsid escaped the session; what stayed in it must be gone.
			for _, pid := range pids {
				if alive(pid) && sessionOf(pid) == p.Pid() {
					t.Errorf("pid %d of the session still alive", pid)
				}
			}
			killUser(t, u.Uid)
		})
	}
}

// userPids lists live processes whose real uid is uid.
func userPids(t *testing.T, uid string) []int {
	t.Helper()
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" && f[1] == uid && alive(pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && !strings.HasPrefix(string(b[i+1:]), " Z")
}

func sessionOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	var sid int
	fmt.Sscan(f[3], &sid)
	return sid
}

// killUser kills every process of uid so userdel can run.
func killUser(t *testing.T, uid string) {
	for _, pid := range userPids(t, uid) {
		_ = killpgAs(-1, -pid, 9) // -(-pid): the pid itself
	}
}

func TestHomeMissing(t *testing.T) {
	u := testUser(t)
	cfg := testConfig(t)
	if err := os.Chmod(u.Home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(u.Home, 0, 0); err != nil {
		t.Fatal(err)
	}
	for _, pty := range []bool{false, true} {
		r := Request{User: u.Name, Command: "pwd"}
		if pty {
			r.Pty = &Pty{}
		}
		res := run(t, cfg, r)
		want := "Could not chdir to home directory " + u.Home + ": Permission denied\n"
		got := res.stderr + res.stdout
		if pty {
			want = strings.ReplaceAll(want, "\n", "\r\n") + "/\r\n"
		} else {
			want += "/\n"
		}
		if got != want {
			t.Errorf("pty=%v: unreadable home: output %q, want %q", pty, got, want)
		}
	}
	if err := os.RemoveAll(u.Home); err != nil {
		t.Fatal(err)
	}
	res := run(t, cfg, Request{User: u.Name, Command: "pwd"})
	if want := "Could not chdir to home directory " + u.Home + ": No such file or directory\n"; res.stderr != want || res.stdout != "/\n" {
		t.Errorf("missing home: stdout %q stderr %q, want / and %q", res.stdout, res.stderr, want)
	}
}
