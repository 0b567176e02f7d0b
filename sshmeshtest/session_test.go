package sshmeshtest_test

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// A handler tested without a mesh: what the client would see, from the
// session the handler would get.
func ExampleRunHandler() {
	greet := sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		fmt.Fprintf(s, "hello %s from %s, you ran %q\n", s.LocalUser(), s.Identity().Node, s.RawCommand())
		s.Exit(3)
	})
	var t testing.T // in a test, the test's own *testing.T
	rec := sshmeshtest.RunHandler(&t, greet, sshmeshtest.SessionOptions{User: "ann", Command: "uptime"})
	fmt.Print(rec.Stdout, rec.ExitStatus)
	// Output:
	// hello ann from laptop, you ran "uptime"
	// 3
}

// TestRunHandler: stdin, env, the terminal, subsystems, stderr and signals
// reach the handler and its answers reach the recorder.
func TestRunHandler(t *testing.T) {
	h := sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		in, _ := io.ReadAll(s)
		p, hasPty := s.Pty()
		fmt.Fprintf(s, "in=%s env=%v pty=%v %s %dx%d sub=%s", in, s.Environ(), hasPty, p.Term, p.Window.Cols, p.Window.Rows, s.Subsystem())
		io.WriteString(s.Stderr(), "warn")
		if s.Subsystem() == "" && !hasPty {
			s.ExitSignal("TERM", false, "")
		}
	})
	rec := sshmeshtest.RunHandler(t, h, sshmeshtest.SessionOptions{Command: "x", Stdin: "data", Env: map[string]string{"LANG": "C"}})
	if want := "in=data env=[LANG=C] pty=false  0x0 sub="; rec.Stdout != want || rec.Stderr != "warn" || rec.ExitSignal != "TERM" {
		t.Errorf("exec: %+v; want stdout %q, stderr warn, signal TERM", rec, want)
	}
	rec = sshmeshtest.RunHandler(t, h, sshmeshtest.SessionOptions{Subsystem: "thing", Stdin: "abc"})
	if !strings.HasPrefix(rec.Stdout, "in=abc ") || !strings.HasSuffix(rec.Stdout, "sub=thing") || rec.ExitStatus != 0 {
		t.Errorf("subsystem: %+v", rec)
	}
	rec = sshmeshtest.RunHandler(t, h, sshmeshtest.SessionOptions{Pty: &sshmesh.Pty{Term: "xterm", Window: sshmesh.Window{Cols: 80, Rows: 24}}})
	if !strings.Contains(rec.Stdout, "pty=true xterm 80x24") {
		t.Errorf("shell with a pty: %+v", rec)
	}
}
