package sshmesh

import (
	"context"
	"errors"
	"time"

	"github.com/sshmesh/sshmesh/policy"
)

// Check mode: a rule with "action": "check" lets a login in only after the
// caller proves presence. The auth code calls check; everything about
// checks lives in this file and its helpers. Package checkpage has a
// built-in Checker: an approval page on the node's own mesh address.

// DefaultCheckTimeout is how long a login waits for its check when the
// Checker's CheckTimeout returns 0.
const DefaultCheckTimeout = 10 * time.Minute

// Checker runs the proof-of-presence flow of "check" decisions: an
// approval page, an identity provider, a chat approval. Its methods are
// called concurrently, from the auth callbacks of many conns.
type Checker interface {
	// CheckTimeout is how long a login may wait for its check. The server
	// lifts the conn's handshake deadline to it and ends Check's ctx when it
	// passes. 0 means [DefaultCheckTimeout].
	CheckTimeout() time.Duration

	// Check blocks until the caller of r is approved (it returns nil: the
	// login goes on) or not (an error: the login is refused), or ctx ends.
	// The client sees the Message of a *[CheckRefusal] in the error, or a
	// plain "access denied"; the server logs the error itself.
	Check(ctx context.Context, r *CheckRequest) error
}

// CheckRequest is one login waiting for a check.
type CheckRequest struct {
	// Decision is the policy's check decision: Caller, LocalUser, Rule,
	// RulePos, CheckPeriod and Message.
	Decision policy.Decision
	// User is the login name the client asked for.
	User string
	// Peer is the conn's peer: the caller's key and mesh address and port
	// (Addr), and the address and key of this node (Local, Self).
	Peer Peer
	// ConnID is the id of the conn in the server's audit log ("conn").
	ConnID string
	// SendBanner sends message to the client before authentication ends;
	// the stock ssh client prints it on stderr at once, also in batch mode.
	// It may be called more than once.
	SendBanner func(message string) error
}

// CheckRefusal is a refused check whose Message the client may see, such
// as "login denied at the approval page".
type CheckRefusal struct {
	Message string // shown to the client as is
}

// Error returns the refusal with its message.
func (e *CheckRefusal) Error() string { return "check refused: " + e.Message }

// check holds the login of a check decision until the caller is approved.
// It returns nil to let the login in, or the auth error (with the banner
// the client prints) to refuse it. attrs are the log attributes of the
// decision.
func (c *serverConn) check(d policy.Decision, req policy.Request, attrs []any, banner func(string) error) error {
	s := c.srv
	log := c.log()
	if s.Checker == nil {
		log.Warn("login refused: check mode is not available on this server", attrs...)
		return c.refuse("check mode is not available on this server", "access denied: this login needs a check, which this server does not offer")
	}
	timeout := durationOr(s.Checker.CheckTimeout(), DefaultCheckTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	// The conn is held for the check: lift its deadline to the check's
	// (with a little slack for the refusal to reach the client), and put
	// the login grace time back for the rest of the handshake.
	c.nc.SetDeadline(time.Now().Add(timeout + 5*time.Second))
	defer c.nc.SetDeadline(time.Now().Add(s.loginGraceTime()))

	// Stop waiting when the server closes.
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if s.isClosed() {
					cancel()
					return
				}
			}
		}
	}()

	r := &CheckRequest{
		Decision:   d,
		User:       req.User,
		Peer:       c.peer,
		ConnID:     c.id,
		SendBanner: banner,
	}
	// Remember where the client is, to explain a conn that breaks because
	// another process with its key takes its traffic (see endpointMoved).
	c.checkEndpoint = c.peerEndpoint()
	log.Info("login waiting for a check", attrs...)
	err := s.Checker.Check(ctx, r)
	if err == nil {
		return nil
	}
	var refusal *CheckRefusal
	switch {
	case errors.As(err, &refusal):
		log.Info("login refused: check refused", append(attrs, "err", err)...)
		return c.refuse("check refused", refusal.Message)
	case ctx.Err() != nil && s.isClosed():
		log.Info("login refused: server closing during the check", attrs...)
		return c.refuse("the server closed during the check", "access denied: the server is shutting down")
	case errors.Is(err, context.DeadlineExceeded):
		log.Info("login refused: check timed out", append(attrs, "timeout", timeout)...)
		return c.refuse("check timed out", "access denied: the login was not approved within "+timeout.String())
	}
	log.Warn("login refused: check failed", append(attrs, "err", err)...)
	return c.refuse("check failed", "access denied")
}
