package sshmesh_test

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestLoginSessionForwardsOnHandlerGoroutine: while its command runs, a
// login session's signals reach the command from the handler's own
// goroutine, with no second goroutine of the login handler per session.
func TestLoginSessionForwardsOnHandlerGoroutine(t *testing.T) {
	u := testkit.NewUser(t, testkit.UserOptions{})
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.LoginHandler()})
	sess, err := ts.dial(t, u.Name).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var out sshmeshtest.Buffer
	sess.Stdout = &out
	if err := sess.Start("echo READY; exec sleep 600"); err != nil {
		t.Fatal(err)
	}
	out.WaitFor(t, "READY")
	// Earlier tests' sessions may still be ending (their handlers return
	// once their processes are gone), so the count is looked at until it
	// is one, for up to 20 s; a second goroutine per session stays.
	if n := goroutinesUntil("sshmesh.serveLogin", 1); n != 1 {
		t.Errorf("%d goroutines of the login handler for one session, want 1", n)
	}
	if err := sess.Signal(ssh.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err := <-done:
		var ee *ssh.ExitError
		if !errors.As(err, &ee) || ee.Signal() != "TERM" {
			t.Errorf("session ended with %v, want signal TERM", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("the session's command did not end within 20 s of SIGTERM")
	}
}

// TestIdleConnHoldsNoWatchGoroutine: an authenticated conn's watchdog
// (keepalives, idle timeout, expiry; see TestKeepAliveClosesDeadClient and
// TestIdleTimeout for what it does) waits between its ticks as a timer,
// not as a goroutine per conn.
func TestIdleConnHoldsNoWatchGoroutine(t *testing.T) {
	idleConn(t, &sshmesh.Server{IdleTimeout: time.Hour})
	// A tick of another test's conn still closing can be running at the
	// moment of a look; a goroutine per conn is there at every look.
	if n := goroutinesUntil("sshmesh.(*serverConn).watch", 0) + goroutinesUntil("sshmesh.(*watchdog)", 0); n != 0 {
		t.Errorf("%d goroutines of the conn's watchdog between its ticks, want 0", n)
	}
}

// TestIdleConnHoldsNoGlobalRequestGoroutine: a conn that has sent no
// global request holds no goroutine waiting for one; its first request
// starts one, which answers it and the next in order.
func TestIdleConnHoldsNoGlobalRequestGoroutine(t *testing.T) {
	c := idleConn(t, &sshmesh.Server{})
	if n := goroutinesUntil("sshmesh.(*serverConn).globalRequests", 0); n != 0 {
		t.Errorf("%d goroutines wait for the global requests of a conn that sent none, want 0", n)
	}
	for i := range 3 {
		// OpenSSH's keepalive: any reply, here a failure, says the server is there.
		ok, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
		if err != nil || ok {
			t.Fatalf("keepalive %d: ok %v, err %v; want a failure reply", i, ok, err)
		}
	}
	if n := goroutinesUntil("sshmesh.(*serverConn).globalRequests", 1); n != 1 {
		t.Errorf("%d goroutines answer the conn's global requests after three, want 1", n)
	}
}

// idleConn starts srv with a handler that waits for its session's end,
// and returns a client conn past its login with one such session open.
func idleConn(t *testing.T, srv *sshmesh.Server) *ssh.Client {
	srv.Handler = sshmesh.HandlerFunc(func(s *sshmesh.Session) { <-s.Context().Done() })
	c := startServer(t, srv).dial(t, "ann")
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start("x"); err != nil { // the handler runs: the conn is past its login
		t.Fatal(err)
	}
	return c
}

// goroutinesUntil looks at the number of goroutines in fn until it is
// want, for up to 20 s, and returns the last count.
func goroutinesUntil(fn string, want int) int {
	n := goroutinesIn(fn)
	for deadline := time.Now().Add(20 * time.Second); n != want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		n = goroutinesIn(fn)
	}
	return n
}

// goroutinesIn counts the goroutines with fn (a function name's prefix,
// package-qualified) on their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if strings.Contains(string(g), fn) {
			n++
		}
	}
	return n
}
