package session

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// TestQuietSessionHoldsNoGoroutine: while a session's command runs without
// output, no goroutine of this package waits for its output or for its
// exit, with pipes or with a terminal; output after the quiet (from both
// pipes) and the exit status still reach the client.
func TestQuietSessionHoldsNoGoroutine(t *testing.T) {
	u := testUser(t)
	cfg := testConfig(t)
	for _, withPty := range []bool{false, true} {
		name := "pipes"
		if withPty {
			name = "terminal"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			in, typed := io.Pipe()
			defer typed.Close()
			var out, errOut testkit.Buffer
			r := Request{User: u.Name, Stdin: in, Stdout: &out, Stderr: &errOut,
				Command: "echo READY; read x; echo out $x; echo err $x >&2; exit 4"}
			if withPty {
				r.Pty = &Pty{Term: "xterm"}
			}
			p, err := start(ctx, r, cfg)
			if err != nil {
				t.Fatal(err)
			}
			out.WaitFor(t, "READY")
			// The goroutine that copied READY ends once the output has been quiet
			// for holdQuiet.
			waiting := func() int {
				return goroutinesIn("session.(*outputCopy)", "session.(*Process).wait", "session.copyFromFile",
					"session.whenExited")
			}
			n := waiting()
			for deadline := time.Now().Add(20 * time.Second); n != 0 && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				n = waiting()
			}
			if n != 0 {
				t.Errorf("%d goroutines wait for a quiet session's output or exit, want 0", n)
			}
			if _, err := typed.Write([]byte("hi\n")); err != nil {
				t.Fatal(err)
			}
			done := make(chan Exit, 1)
			go func() { exit, _ := p.Wait(); done <- exit }()
			select {
			case exit := <-done:
				if exit.Code != 4 {
					t.Errorf("exit %+v, want code 4", exit)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the session did not end within 20 s of its input")
			}
			errWant := errOut.String()
			if withPty {
				errWant = out.String() // one terminal for both
			}
			if !strings.Contains(out.String(), "out hi") || !strings.Contains(errWant, "err hi") {
				t.Errorf("stdout %q, stderr %q: want the output after the quiet on both", out.String(), errOut.String())
			}
		})
	}
}

// TestUndeliverableOutputClosesThePipe: once the session's output can no
// longer be delivered, the child's next write to the pipe fails (SIGPIPE)
// instead of blocking once the pipe is full, whether the copy was on the
// process's watcher or not.
func TestUndeliverableOutputClosesThePipe(t *testing.T) {
	u := testUser(t)
	cfg := testConfig(t)
	for _, watched := range []bool{true, false} {
		name := "watcher"
		if !watched {
			name = "no watcher"
		}
		t.Run(name, func(t *testing.T) {
			if !watched {
				refuseWatches(t)
			}
			// Quiet for longer than holdQuiet first, so that the copy
			// waits on the watcher (or, refused, on the poller) when
			// the output comes.
			p, err := start(t.Context(), Request{User: u.Name, Stdout: failingWriter{errors.New("channel gone")},
				Command: "sleep 1.5; exec yes"}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan Exit, 1)
			go func() { exit, _ := p.Wait(); done <- exit }()
			select {
			case exit := <-done:
				if exit.Signal != "PIPE" {
					t.Errorf("the session ended with %+v, want signal PIPE", exit)
				}
			case <-time.After(20 * time.Second):
				killSession(p.Pid(), 9)
				t.Fatal("the command still wrote 20 s after its output could no longer be delivered")
			}
		})
	}
}
