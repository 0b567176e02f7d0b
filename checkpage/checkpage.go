// Package checkpage is sshmesh's built-in [sshmesh.Checker]: an approval
// page served by the node itself, on its own mesh address, over the same
// in-process stack as SSH.
//
// # The flow
//
// A login that a "check" rule decides gets a banner with a URL,
//
//	Approve this login at http://100.64.0.1/check/<token> (waiting up to 10m)
//
// and waits. The page shows who asks (node, owner, mesh address), to which
// node, as which local user and under which rule. Only a visitor whose own
// mesh identity (learnt from the conn, as SSH learns it) has the same owner
// as the caller may decide; anyone else gets 403 and nothing changes.
// Tokens are 128 random bits, single use, and die with the wait.
//
// What approving takes is the rule's "checkProof" ([policy.Decision]
// CheckProof): by default a passkey of the caller's owner (WebAuthn,
// verified with go-webauthn; see [LinkHost] and [NewInvite]); "oidc", a
// sign-in at the identity provider ([OIDC]) as the owner; "mesh", only the
// visit, with an Approve button. Deny needs only the visit.
//
// # The local link
//
// A browser outside the mesh cannot reach the mesh address. `sshmesh nc`
// and `sshmesh proxy` serve the page of their own conn's check on loopback,
// at http://[LinkHost]:PORT/check/<token>, forwarded over their node; that
// is also the secure context passkeys need. The page tells such a link
// what became of its check in the [StateHeader] header, and keeps its own
// API (passkeys, enrolment, sign-in) under the check's path, so a link
// forwards that path and nothing else.
//
// # Approvals
//
// An approval lasts the rule's checkPeriod for its (caller key, local user,
// rule); logins within it go straight through. Approvals are kept in memory
// and, when StateFile is set, in a file written atomically, so a restart
// does not ask again.
//
// # No tab storms
//
// While a check for the same (caller key, local user, rule) is pending,
// every new login joins it: same URL, one decision releases them all. New
// checks per caller are rate-limited.
//
// # Notices
//
// When Dial is set, the node also sends the caller's node a [Notice] (to
// [NoticePort] on the caller's mesh address) naming the conn by its source
// port, so `sshmesh nc` and `sshmesh proxy` can serve and open the page.
// One notice per pending check: joiners get the banner only.
package checkpage

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

// DefaultPort is the page's port when Checker.Port is 0. Port 80 needs no
// privilege on the node's in-process stack and clashes with nothing on the
// host, and it keeps the URL short.
const DefaultPort = 80

// Checker serves the approval page and decides check logins. Set the
// fields before the first Check or Serve and do not change them after.
type Checker struct {
	// Identify returns what the policy knows about a mesh node: the page's
	// visitors and this node. Required; (*policy.Document).Node is one. On a
	// tailnet the coordinator vouches for both (sshmesh.IdentityConn) and
	// Identify is asked only about conns without that word.
	Identify func(meshkey.Public) (policy.Identity, bool)

	// Port is the TCP port the page is served on (the listener given to
	// Serve); it goes into the URL. 0 means [DefaultPort].
	Port uint16

	// Timeout is how long a login waits for a decision; the token dies
	// then. 0 means [sshmesh.DefaultCheckTimeout].
	Timeout time.Duration

	// StateFile keeps approvals across restarts (JSON, written atomically,
	// mode 0600). "" keeps them in memory only. A missing file is an empty
	// one; an unreadable one is logged and replaced at the next approval.
	StateFile string

	// Dial opens a conn over the mesh; it sends notices to the caller's
	// node. nil sends none. (*netstack.Node).Dial is one.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// NewChecksPerMinute caps the new checks one caller may start: a burst
	// of that many, then one more every 1/NewChecksPerMinute minute. Joining
	// a pending check does not count. 0 means 5.
	NewChecksPerMinute int

	// PasskeyFile holds the enrolled passkeys (JSON, written atomically,
	// mode 0600). "" means none: checks of rules that ask for a passkey
	// (the default) cannot be approved.
	PasskeyFile string

	// InviteDir holds the enrolment invitations that NewInvite makes. ""
	// means none: no passkey can be enrolled on the page.
	InviteDir string

	// OIDC is the identity provider of rules with "checkProof": "oidc". nil
	// means none: such checks cannot be approved.
	OIDC *OIDC

	// Now is the clock of approvals and rate limits. nil means time.Now.
	Now func() time.Time

	// Logger receives the log. nil discards it.
	Logger *slog.Logger

	once      sync.Once
	mu        sync.Mutex
	approvals map[approvalKey]approval
	pending   map[approvalKey]*pending
	byToken   map[string]*pending
	buckets   map[meshkey.Public]*bucket
	passkeys  *passkeyStore // nil without PasskeyFile
	saveMu    sync.Mutex    // serializes state file writes
	srvMu     sync.Mutex
	srvs      map[*http.Server]struct{}
	closed    bool
}

// approvalKey is what an approval covers.
type approvalKey struct {
	Peer      meshkey.Public
	Caller    string // callerKey: who the policy said the peer was
	LocalUser string
	Rule      string // ruleKey: the rule's content, not its place
}

// callerKey names who the caller was when approved: its owner and tags.
// A key that later belongs to someone else (a node moved to another owner
// in the policy, or on a tailnet) is asked again.
func callerKey(id policy.Identity) string {
	tags := slices.Clone(id.Tags)
	slices.Sort(tags)
	return id.Owner + "|" + strings.Join(tags, ",")
}

// ruleKey names the rule of d for approvals: its RuleID, which survives a
// reorder of the policy and changes with the rule (so an approval never
// moves to another rule, and a changed rule asks again), or, from a
// policy that sets no RuleID, its Rule.
func ruleKey(d policy.Decision) string {
	if d.RuleID != "" {
		return "id:" + d.RuleID
	}
	return "name:" + d.Rule
}

// approval is one cached approval. It holds until Expires, or until the
// rule's current checkPeriod after Approved, whichever comes first (a
// reloaded policy with a shorter period takes effect at once).
type approval struct {
	Approved time.Time
	Expires  time.Time
}

// pending is a check waiting for its decision.
type pending struct {
	key      approvalKey
	token    string
	csrf     string
	url      string
	created  time.Time // real time
	expires  time.Time // real time: the token dies then
	period   time.Duration
	proof    string // policy.CheckProofPasskey or policy.CheckProofMesh
	linkHost string // LinkHost of this server: the passkeys' relying party
	info     pageInfo
	done     chan struct{} // closed once the state is final
	state    state         // guarded by Checker.mu
	timer    *time.Timer
	login    *ceremony // the passkey login under way; guarded by Checker.mu
	enrol    *ceremony // the enrolment under way; guarded by Checker.mu
	oidc     *oidcFlow // the identity provider sign-in under way; guarded by Checker.mu
}

type state int

const (
	statePending state = iota
	stateApproved
	stateDenied
	stateExpired
)

func (c *Checker) init() {
	c.once.Do(func() {
		c.approvals = make(map[approvalKey]approval)
		c.pending = make(map[approvalKey]*pending)
		c.byToken = make(map[string]*pending)
		c.buckets = make(map[meshkey.Public]*bucket)
		if c.PasskeyFile != "" {
			c.passkeys = &passkeyStore{path: c.PasskeyFile}
		}
		c.load()
	})
}

func (c *Checker) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Checker) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// CheckTimeout returns Timeout, or its default.
func (c *Checker) CheckTimeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return sshmesh.DefaultCheckTimeout
}

// Check lets r in at once when an approval covers it; otherwise it sends
// the banner with the page's URL (joining a pending check for the same
// caller, local user and rule, or starting one) and waits for the
// decision, the token's end, or ctx.
func (c *Checker) Check(ctx context.Context, r *sshmesh.CheckRequest) error {
	c.init()
	d := r.Decision
	key := approvalKey{Peer: r.Peer.Key, Caller: callerKey(d.Caller), LocalUser: d.LocalUser, Rule: ruleKey(d)}
	period := d.CheckPeriod
	if period <= 0 {
		period = policy.DefaultCheckPeriod
	}
	now := c.now()

	c.mu.Lock()
	if a, ok := c.approvals[key]; ok {
		if now.Before(a.Approved.Add(period)) && now.Before(a.Expires) {
			c.mu.Unlock()
			return nil
		}
		delete(c.approvals, key)
	}
	p := c.pending[key]
	first := p == nil
	if first {
		if !c.allowNew(r.Peer.Key, now) {
			c.mu.Unlock()
			c.logger().Warn("check refused: too many new checks", "peer", r.Peer.Key.String(), "local_user", d.LocalUser, "rule", d.Rule)
			return &sshmesh.CheckRefusal{Message: "too many logins waiting for approval from this node; try again in a minute"}
		}
		var err error
		p, err = c.newPending(key, r, period)
		if err != nil {
			c.mu.Unlock()
			return err
		}
	}
	c.mu.Unlock()

	wait := time.Until(p.expires).Round(time.Second)
	if r.SendBanner != nil {
		msg := fmt.Sprintf("Approve this login at %s (waiting up to %s)\r\n", p.url, shortDuration(wait))
		if p.proof == policy.CheckProofPasskey {
			msg += "It takes a passkey of " + d.Caller.Owner + ": with sshmesh nc, open the .localhost link it prints.\r\n"
		}
		if err := r.SendBanner(msg); err != nil {
			return fmt.Errorf("checkpage: banner: %w", err)
		}
	}
	if first {
		c.logger().Info("check started", "conn", r.ConnID, "peer", r.Peer.Key.String(), "node", d.Caller.Node, "addr", r.Peer.Addr.String(),
			"user", r.User, "local_user", d.LocalUser, "rule", d.Rule, "timeout", c.CheckTimeout())
		if c.Dial != nil {
			go c.notify(r.Peer.Addr, p.url)
		}
	}

	select {
	case <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	st := p.state
	c.mu.Unlock()
	switch st {
	case stateApproved:
		return nil
	case stateDenied:
		return &sshmesh.CheckRefusal{Message: "login denied at the approval page"}
	}
	return &sshmesh.CheckRefusal{Message: "login not approved within " + shortDuration(c.CheckTimeout())}
}

// newPending starts a check for key. c.mu is held.
func (c *Checker) newPending(key approvalKey, r *sshmesh.CheckRequest, period time.Duration) (*pending, error) {
	token, err := randomToken()
	if err != nil {
		return nil, err
	}
	csrf, err := randomToken()
	if err != nil {
		return nil, err
	}
	timeout := c.CheckTimeout()
	created := time.Now()
	p := &pending{
		key:      key,
		token:    token,
		csrf:     csrf,
		url:      c.pageURL(r.Peer.Local.Addr(), token),
		created:  created,
		expires:  created.Add(timeout),
		period:   period,
		proof:    policy.CheckProofPasskey,
		linkHost: LinkHost(r.Peer.Self),
		done:     make(chan struct{}),
		info:     c.describe(r, period),
	}
	if pr := r.Decision.CheckProof; pr == policy.CheckProofMesh || pr == policy.CheckProofOIDC {
		p.proof = pr
	}
	c.pending[key] = p
	c.byToken[token] = p
	p.timer = time.AfterFunc(timeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.finish(p, stateExpired)
	})
	return p, nil
}

// finish ends p with st, unless it has ended already. c.mu is held.
func (c *Checker) finish(p *pending, st state) bool {
	if p.state != statePending {
		return false
	}
	p.state = st
	p.timer.Stop()
	delete(c.byToken, p.token)
	if c.pending[p.key] == p {
		delete(c.pending, p.key)
	}
	if st == stateApproved {
		now := c.now()
		c.approvals[p.key] = approval{Approved: now, Expires: now.Add(p.period)}
	}
	close(p.done)
	return true
}

// pageURL is the page's URL for token on this node's address a.
func (c *Checker) pageURL(a netip.Addr, token string) string {
	port := c.Port
	if port == 0 {
		port = DefaultPort
	}
	host := a.String()
	if port != 80 {
		host = net.JoinHostPort(host, strconv.Itoa(int(port)))
	} else if a.Is6() {
		host = "[" + host + "]"
	}
	return "http://" + host + "/check/" + token
}

// randomToken returns 128 random bits in URL-safe base64.
func randomToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("checkpage: token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// shortDuration prints d as "10m", "1h30m", "45s".
func shortDuration(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// bucket is one caller's allowance of new checks.
type bucket struct {
	tokens float64
	last   time.Time
}

// allowNew takes one new check from peer's allowance. c.mu is held.
func (c *Checker) allowNew(peer meshkey.Public, now time.Time) bool {
	perMin := c.NewChecksPerMinute
	if perMin <= 0 {
		perMin = 5
	}
	b := c.buckets[peer]
	if b == nil {
		b = &bucket{tokens: float64(perMin), last: now}
		c.buckets[peer] = b
	}
	b.tokens = min(float64(perMin), b.tokens+now.Sub(b.last).Minutes()*float64(perMin))
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
