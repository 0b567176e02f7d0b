package sshmesh_test

import (
	"errors"
	"io"
	"os/user"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
)

// TestEOWEndsProducer is `ssh host producer | head -c 64k` as OpenSSH's
// client does it against sshd: once its reader has gone it sends
// eow@openssh.com and discards the rest. The command must then end by
// SIGPIPE, as under sshd, rather than run until it finishes on its own
// (here: never).
func TestEOWEndsProducer(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.LoginHandler()})
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ts.dial(t, u.Username).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start("yes"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, out, 64<<10); err != nil {
		t.Fatal(err)
	}
	if _, err := sess.SendRequest("eow@openssh.com", false, nil); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, out) // the client discards what still comes
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err := <-done:
		var ee *ssh.ExitError
		if !errors.As(err, &ee) || ee.Signal() != "PIPE" {
			t.Errorf("session ended with %v, want the command killed by SIGPIPE", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the command still runs 10 s after eow@openssh.com")
	}
}

// TestWriteAfterEOW: a Go handler sees ErrOutputClosed from Write once
// the client has sent eow@openssh.com, and its stderr still works.
func TestWriteAfterEOW(t *testing.T) {
	got := make(chan error, 1)
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		buf := make([]byte, 1024)
		for {
			if _, err := s.Write(buf); err != nil {
				got <- err
				io.WriteString(s.Stderr(), "stopped")
				s.Exit(3)
				return
			}
		}
	})})
	sess, err := ts.dial(t, "ann").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := sess.StdoutPipe()
	errOut, _ := sess.StderrPipe()
	if err := sess.Start("x"); err != nil {
		t.Fatal(err)
	}
	io.CopyN(io.Discard, out, 8<<10)
	sess.SendRequest("eow@openssh.com", false, nil)
	go io.Copy(io.Discard, out)
	select {
	case err := <-got:
		if !errors.Is(err, sshmesh.ErrOutputClosed) {
			t.Errorf("Write after eow: %v, want ErrOutputClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write still succeeds 10 s after eow@openssh.com")
	}
	if b, _ := io.ReadAll(errOut); string(b) != "stopped" {
		t.Errorf("stderr after eow: %q, want %q", b, "stopped")
	}
	if err := sess.Wait(); exitCode(err) != 3 {
		t.Errorf("exit: %v, want status 3", err)
	}
}
