package sshmesh

import (
	"github.com/sshmesh/sshmesh/policy"
)

// Check mode: a rule with "action": "check" lets a login in only after the
// caller proves presence. The auth code calls check; everything about
// checks lives in this file and its helpers.

// Checker runs the proof-of-presence flow for check decisions.
type Checker interface{}

// check holds the login of a check decision until the caller is approved.
// It returns nil to let the login in, or the auth error (with the banner
// the client prints) to refuse it. attrs are the log attributes of the
// decision.
func (c *serverConn) check(d policy.Decision, req policy.Request, attrs []any) error {
	c.srv.logger().Warn("login refused: check mode is not available on this server", attrs...)
	return refuse("access denied: this login needs a check, which this server does not offer")
}
