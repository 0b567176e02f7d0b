package sshmesh_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// blockingHandler prints "ready" and waits for the session to end.
var blockingHandler = sshmesh.HandlerFunc(func(s *sshmesh.Session) {
	io.WriteString(s, "ready\n")
	<-s.Context().Done()
})

type openSession struct {
	stderr *sshmeshtest.Buffer
	done   chan error
}

// startBlocking opens a session that runs until the server ends it.
func startBlocking(t *testing.T, ts *testServer, user string) *openSession {
	t.Helper()
	return startBlockingOn(t, ts.dial(t, user))
}

func startBlockingOn(t *testing.T, c *ssh.Client) *openSession {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	os := &openSession{stderr: &sshmeshtest.Buffer{}, done: make(chan error, 1)}
	sess.Stderr = os.stderr
	out, _ := sess.StdoutPipe()
	if err := sess.Start("x"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatal(err)
	}
	go func() { io.Copy(io.Discard, out); os.done <- sess.Wait() }()
	return os
}

// endWait bounds the wait for a session the server ends to end at the
// client. It ends at once; the bound is for a loaded machine (CI runs the
// packages' tests side by side on 2 cores), and a session the server never
// ends still fails the wait.
const endWait = 10 * time.Second

func (o *openSession) endedWithin(d time.Duration) bool {
	select {
	case <-o.done:
		return true
	case <-time.After(d):
		return false
	}
}

func TestSetPolicyRevokes(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{Handler: blockingHandler})
	ann := startBlocking(t, ts, "ann")
	bob := startBlocking(t, ts, "bob")

	// The new policy refuses ann and keeps bob.
	n := ts.srv.SetPolicy(policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
		if r.User == "ann" {
			return policy.Decision{Message: "no more ann"}, nil
		}
		return policy.Decision{Action: policy.Accept, LocalUser: r.User}, nil
	}))
	if n != 1 {
		t.Errorf("SetPolicy closed %d conns, want 1", n)
	}
	if !ann.endedWithin(endWait) {
		t.Fatalf("revoked session still open after %v", endWait)
	}
	if !strings.Contains(ann.stderr.String(), "access revoked by policy change") {
		t.Errorf("revoked session's stderr %q lacks the message", ann.stderr.String())
	}
	if bob.endedWithin(300 * time.Millisecond) {
		t.Fatal("a session the new policy allows was ended")
	}
	// New logins follow the new policy.
	if _, err := ts.dialFrom(t, clientAddr, "ann", nil); err == nil {
		t.Error("ann logged in after the policy change")
	}

	// A policy that maps bob to another local user revokes bob too.
	ts.srv.SetPolicy(policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
		return policy.Decision{Action: policy.Accept, LocalUser: "nobody"}, nil
	}))
	if !bob.endedWithin(endWait) {
		t.Fatal("session whose local user changed still open")
	}
}

func TestClosePeer(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{Handler: blockingHandler})
	o := startBlocking(t, ts, "ann")
	if n := ts.srv.ClosePeer(ts.keys[clientAddr], "peer removed from the mesh"); n != 1 {
		t.Errorf("ClosePeer closed %d conns", n)
	}
	if !o.endedWithin(endWait) || !strings.Contains(o.stderr.String(), "peer removed from the mesh") {
		t.Errorf("session of a removed peer: stderr %q", o.stderr.String())
	}
}

func TestSessionDurationAndExpiry(t *testing.T) {
	clock := sshmeshtest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	expires := clock.Now().Add(24 * time.Hour)
	ts := startServer(t, &sshmesh.Server{Handler: blockingHandler, Now: clock.Now,
		Policy: policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
			d := policy.Decision{Action: policy.Accept, LocalUser: r.User}
			if r.User == "timed" {
				d.SessionDuration = time.Hour
			} else {
				d.Expires = expires
			}
			return d, nil
		})})
	timed := startBlocking(t, ts, "timed")
	expiring := startBlocking(t, ts, "ann")

	clock.Advance(59 * time.Minute)
	if timed.endedWithin(600 * time.Millisecond) {
		t.Fatal("session ended before its duration")
	}
	clock.Advance(2 * time.Minute)
	if !timed.endedWithin(endWait) {
		t.Fatal("session still open past its rule's sessionDuration")
	}
	if !strings.Contains(timed.stderr.String(), "at most 1h0m0s") {
		t.Errorf("stderr %q", timed.stderr.String())
	}
	if expiring.endedWithin(100 * time.Millisecond) {
		t.Fatal("session of an unexpired rule ended")
	}
	clock.Advance(24 * time.Hour)
	if !expiring.endedWithin(endWait) || !strings.Contains(expiring.stderr.String(), "expired") {
		t.Errorf("session of an expired rule: stderr %q", expiring.stderr.String())
	}
}

// TestReloadedExpiryEnforced: an expiry that a policy change brings to a
// conn whose login had none ends the conn on time, whether its watchdog
// was ticking at the keepalive interval (30 s by default) or not at all
// (keepalives off, no idle timeout).
func TestReloadedExpiryEnforced(t *testing.T) {
	for _, keepAlive := range []time.Duration{0, -1} {
		accept := func(expires time.Time) policy.Policy {
			return policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
				return policy.Decision{Action: policy.Accept, LocalUser: r.User, Expires: expires}, nil
			})
		}
		ts := startServer(t, &sshmesh.Server{Handler: blockingHandler, KeepAliveInterval: keepAlive, Policy: accept(time.Time{})})
		s := startBlocking(t, ts, "ann")
		if n := ts.srv.SetPolicy(accept(time.Now().Add(2 * time.Second))); n != 0 {
			t.Fatalf("keepalive %v: SetPolicy closed %d conns at once, want 0 (the rule has not expired yet)", keepAlive, n)
		}
		if ended := s.endedWithin(endWait); !ended || !strings.Contains(s.stderr.String(), "expired") {
			t.Errorf("keepalive %v: a session past the expiry a reload brought: ended %v, stderr %q", keepAlive, ended, s.stderr.String())
		}
	}
}
