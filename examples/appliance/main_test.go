package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/sshmesh/sshmesh/examples/internal/exampletest"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// The stock ssh client reaches the appliance through `sshmesh nc`, built
// once per run.
var sshmeshBin string

func TestMain(m *testing.M) { exampletest.MainWithSSHMesh(m, &sshmeshBin) }

// TestAppliance runs the appliance with the policy.hujson of this directory
// (its keys swapped for the test mesh's) and logs in with the stock ssh
// client: alice (group:admins) as admin on a PTY, with line editing, window
// changes and set; victor (group:viewers) as viewer, refused on set, and
// refused as admin by the policy.
func TestAppliance(t *testing.T) {
	ssh := sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	m := sshmeshtest.NewMesh(t, 3)
	dir := t.TempDir()
	confs := exampletest.WGQuickFiles(t, m, dir, "appliance.conf", "alice.conf", "victor.conf")
	polPath := exampletest.Policy(t, "policy.hujson", dir, m.Nodes...)
	exampletest.Run(t, "appliance serving", func(ctx context.Context, logger *slog.Logger) error {
		return run(ctx, options{wgPath: confs[0], policyPath: polPath, stateDir: dir}, logger)
	})
	sshArgs := func(conf, login string, extra ...string) []string {
		return append(append(exampletest.SSHOptions(sshmeshBin, conf), login+"@100.64.0.1"), extra...)
	}

	t.Run("admin", func(t *testing.T) {
		c := startConsole(t, ssh, sshArgs(confs[1], "admin"), 100, 24)
		c.expect("Welcome, alice@example.com (node alice-laptop). You are admin.")
		c.expect("admin@appliance-1> ")
		c.send("status\r")
		c.expect("terminal 100x24")
		c.resize(120, 30) // ssh sends window-change on SIGWINCH
		for i := 0; ; i++ {
			c.send("status\r")
			if c.tryExpect("terminal 120x30", 2*time.Second) {
				break
			}
			if i == 5 {
				t.Fatalf("the window change did not arrive:\n%s", c.out.String())
			}
		}
		c.send("set led blink\r")
		c.expect("led = blink")
		c.send("get lex\x7fd\r") // line editing: a backspace
		c.expect("\r\nblink\r\n")
		c.send("exit\r")
		if code := c.wait(); code != 0 {
			t.Errorf("ssh exit %d; want 0", code)
		}
	})

	t.Run("viewer", func(t *testing.T) {
		c := startConsole(t, ssh, sshArgs(confs[2], "viewer"), 80, 24)
		c.expect("You are viewer.")
		c.send("set led off\r")
		c.expect("set: permission denied: role viewer can only get")
		c.send("get led\r")
		c.expect("\r\nblink\r\n") // admin's change, unchanged by the viewer
		c.send("\x04")            // ^D leaves
		if code := c.wait(); code != 0 {
			t.Errorf("ssh exit %d; want 0", code)
		}

		// Without a terminal: one command, its exit status.
		out, err := exec.Command(ssh, sshArgs(confs[2], "viewer", "set", "led", "off")...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "permission denied") {
			t.Errorf("ssh viewer@ set: %v, %q; want exit 1 and permission denied", err, out)
		}
		// The policy refuses victor as admin, with the rule's message.
		// (OpenSSH prints the server's message as a banner, at the default
		// LogLevel only.)
		out, err = exec.Command(ssh, sshArgs(confs[2], "admin", "get")...).CombinedOutput()
		if !errors.As(err, &ee) || ee.ExitCode() != 255 || !strings.Contains(string(out), "this appliance has two logins") {
			t.Errorf("ssh admin@ as a viewer: %v, %q; want exit 255 and the policy's message", err, out)
		}
	})
}

// console is the stock ssh client on a PTY.
type console struct {
	t    *testing.T
	cmd  *exec.Cmd
	ptmx *os.File
	out  sshmeshtest.Buffer
	seen int // out is matched from here on
	read chan struct{}
}

func startConsole(t *testing.T, ssh string, args []string, cols, rows uint16) *console {
	t.Helper()
	c := &console{t: t, cmd: exec.Command(ssh, args...), read: make(chan struct{})}
	ptmx, err := pty.StartWithSize(c.cmd, &pty.Winsize{Cols: cols, Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	c.ptmx = ptmx
	go func() { io.Copy(&c.out, ptmx); close(c.read) }()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
		ptmx.Close()
		if t.Failed() {
			t.Logf("terminal:\n%q", c.out.String())
		}
	})
	return c
}

func (c *console) send(s string) {
	c.t.Helper()
	if _, err := c.ptmx.WriteString(s); err != nil {
		c.t.Fatal(err)
	}
}

func (c *console) resize(cols, rows uint16) {
	c.t.Helper()
	if err := pty.Setsize(c.ptmx, &pty.Winsize{Cols: cols, Rows: rows}); err != nil {
		c.t.Fatal(err)
	}
}

// tryExpect waits up to d for s in the output after what was matched.
func (c *console) tryExpect(s string, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		out := c.out.String()
		if i := strings.Index(out[c.seen:], s); i >= 0 {
			c.seen += i + len(s)
			return true
		}
	}
	return false
}

func (c *console) expect(s string) {
	c.t.Helper()
	if !c.tryExpect(s, 30*time.Second) {
		c.t.Fatalf("no %q on the terminal within 30 s; after the last match:\n%q", s, c.out.String()[c.seen:])
	}
}

// wait waits for ssh to exit and returns its status.
func (c *console) wait() int {
	c.t.Helper()
	err := c.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return 0
}
