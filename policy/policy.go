// Package policy decides who may log in where, and as whom.
//
// The server asks a [Policy] once per login attempt with a [Request]: who
// calls (their WireGuard key, proven by the mesh), which node they reached
// (the server itself), and which login name they asked for. The [Decision]
// says accept, check or reject, which local user the session runs as, and
// the per-rule options the later steps of the session obey.
//
// Applications with their own control plane implement [Policy] themselves;
// [Func] adapts a plain function. The rule document (HuJSON) is [Document].
package policy

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
)

// Policy decides login attempts. Implementations must be safe for
// concurrent use; Evaluate is called on every login, so keep it fast.
type Policy interface {
	// Evaluate returns the decision for r. An error means the policy could
	// not decide; the server then refuses the login and logs the error.
	Evaluate(ctx context.Context, r Request) (Decision, error)
}

// Func adapts an ordinary function to [Policy].
type Func func(ctx context.Context, r Request) (Decision, error)

// Evaluate calls f(ctx, r).
func (f Func) Evaluate(ctx context.Context, r Request) (Decision, error) { return f(ctx, r) }

// Request is one login attempt.
type Request struct {
	// Src is the caller's WireGuard public key, as the mesh proved it.
	Src meshkey.Public
	// SrcAddr is the caller's mesh address and port.
	SrcAddr netip.AddrPort
	// Dst is the public key of the node that was reached (the server).
	Dst meshkey.Public
	// User is the login name the client asked for (ssh user@host).
	User string
}

// Action is what a decision does with the login.
type Action int

const (
	// Reject refuses the login. It is the zero value: deny by default.
	Reject Action = iota
	// Accept lets the login in as Decision.LocalUser.
	Accept
	// Check lets the login in only after the caller proves presence
	// (see Decision.CheckPeriod).
	Check
)

// String returns "reject", "accept" or "check".
func (a Action) String() string {
	switch a {
	case Reject:
		return "reject"
	case Accept:
		return "accept"
	case Check:
		return "check"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Identity is what a policy knows about a mesh node. Only Key is certain to
// be set; the rest is filled where the policy names the node.
type Identity struct {
	Key   meshkey.Public // WireGuard public key
	Node  string         // node name, "" if the policy does not name it
	Owner string         // owner (e.g. alice@example.com), "" for tagged nodes
	Tags  []string       // tags such as "tag:server"
}

// Name returns the node name, or a short form of the key when the node has none.
func (id Identity) Name() string {
	if id.Node != "" {
		return id.Node
	}
	return id.Key.Short()
}

// Decision is a policy's answer, with the options of the rule that made it.
// The zero Decision rejects.
type Decision struct {
	Action    Action
	LocalUser string // the local account to run as (accept and check)
	// Message is shown to the client on reject (or with a check); "" means a
	// plain "access denied".
	Message string
	// Rule names the rule that decided, e.g. "ssh[2]"; "" when no rule
	// matched (default deny) or the policy has no rules.
	Rule string
	// RulePos is where that rule is written, e.g. "policy.hujson:14", or "".
	RulePos string
	// Caller is what the policy knows about the caller (node name, owner, tags).
	Caller Identity

	// AcceptEnv lists environment names (with * wildcards) the client may
	// set. Loader variables (LD_*, DYLD_*, ...) are refused whatever it says.
	AcceptEnv []string
	// CheckPeriod is how long a check approval lasts (Check only).
	CheckPeriod time.Duration
	// Expires is when the rule stops matching; sessions it admitted end then.
	// Zero means never.
	Expires time.Time
	// SessionDuration caps how long a session may last; 0 means no cap.
	SessionDuration time.Duration
	// AgentForward allows ssh -A.
	AgentForward bool
	// LocalForward and RemoteForward list host:port patterns that ssh -L/-D
	// and ssh -R may use; empty means none.
	LocalForward  []string
	RemoteForward []string
	// Record asks for the sessions to be recorded.
	Record bool
	// OnRecordingFailure is "fail-open" (the default, "") or "fail-closed".
	OnRecordingFailure string
}

// Allowed reports whether the decision lets the login in (accept or check).
func (d Decision) Allowed() bool { return d.Action == Accept || d.Action == Check }
