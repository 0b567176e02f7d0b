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
//
// # The policy document
//
// One document can be shared by the whole mesh; each node evaluates it with
// itself as the destination. It is HuJSON (JSON with comments and trailing
// commas), parsed by [Parse] or [Load]:
//
//	{
//	  "nodes": {                       // who is who, by WireGuard public key
//	    "alice-laptop": {"key": "<base64 public key>", "owner": "alice@example.com"},
//	    "build-1":      {"key": "<base64 public key>", "tags": ["tag:server"]},
//	  },
//	  "groups":    {"group:ops": ["alice@example.com", "group:sre"]},
//	  "tagOwners": {"tag:server": ["group:ops"]},
//	  "ssh": [                         // first match wins; no match = reject
//	    {"action": "accept", "src": ["group:ops"], "dst": ["tag:server"],
//	     "users": ["autogroup:nonroot", "deploy"], "acceptEnv": ["LANG", "LC_*"]},
//	    {"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"],
//	     "users": ["="], "checkPeriod": "12h"},
//	  ],
//	  "tests": [
//	    {"src": "alice-laptop", "dst": "build-1", "accept": ["deploy"], "deny": ["root"]},
//	  ],
//	}
//
// The optional top-level "identity" says who names the nodes: "mesh" (the
// default: the document's own "nodes") or "tailnet" (the tailnet's
// coordinator; see Tailnet documents). Every key is checked: unknown keys, duplicate keys and undefined names are
// errors, each reported as "file:line:col: field: problem".
//
// # Nodes, groups and tags
//
// "nodes" maps a node name (letters, digits, . _ -) to its "key" (as `wg
// pubkey` prints it) and either an "owner" (an email; the node is that
// person's device) or "tags" (the node is a shared machine and belongs to no
// person), never both. Keys must be distinct. Owners are compared ignoring
// case.
//
// "groups" maps group:NAME to emails and other groups (cycles are errors).
// "tagOwners" declares the tags the document may use, with the emails,
// groups or tags that own them; a tag not declared there is an error.
//
// # Rules
//
// Each entry of "ssh" has an "action" (accept, check or reject) and:
//
//   - "src", who calls: a node name; an owner's email (all the nodes she
//     owns); group:NAME (all nodes of its members); tag:NAME;
//     autogroup:member (every node that has an owner); or * (every node).
//   - "dst", where to: a node name; tag:NAME; autogroup:self (a node with
//     the caller's owner); or * (every node; see the safety rule).
//   - "users", the login names allowed: explicit names; "=" (the local part
//     of the caller's owner: alice@example.com → alice); autogroup:nonroot
//     (any name but root); * (any name; in accept and check rules any name
//     but root, in reject rules every name, root included); templates such
//     as "{localpart}-admin". The requested login name must match, and the
//     session runs as that name. root is allowed only by a rule that names
//     "root" itself, and so is every other account with uid 0 on the host
//     (a toor-style alias, see Request.RootUser): only by a rule naming it.
//
// Rules are tried in order and the first that matches decides; when none
// matches the login is rejected. Options, carried in the [Decision]:
// "message" (shown to the client), "expires" (RFC 3339; the rule stops
// matching then), and, for accept and check rules only, "checkPeriod" (check
// only; a Go duration, default 12h), "checkProof" (check only: "passkey",
// the default, "oidc" or "mesh"; see [Decision].CheckProof), "sessionDuration", "acceptEnv" (see
// [EnvAllowed]), "agentForward", "localForward" and "remoteForward" (HOST:PORT
// patterns, see [ForwardAllowed], or absolute unix socket path patterns such
// as "/run/user/*/db.sock", see [SocketForwardAllowed]), "record", "onRecordingFailure"
// (fail-open or fail-closed) and "recorders" (node names and tags of
// `sshmesh recorder` nodes the recording streams to instead of the
// server's own directory; the first that accepts a session records it; a
// rule with "recorders" must also say "record": true, or the document is
// refused).
//
// # Safety
//
// An accept or check rule may reach only tagged nodes and the caller's own
// nodes: for every (src, dst) pair a rule covers, the destination must be
// tagged or have the caller's owner (autogroup:self always does). A rule
// that would let one person, or a tagged node, into another person's
// untagged device is refused when the document is loaded, naming the rule
// and one such pair. Loader environment variables (LD_PRELOAD, DYLD_*,
// BASH_ENV, PATH, ...) are never accepted, whatever "acceptEnv" says.
//
// # Tailnet documents
//
// On a tailnet (headscale or Tailscale, joined through tsnet) the
// coordinator says who is who, and the document says so with the
// top-level key "identity":
//
//	{
//	  "identity": "tailnet",           // "mesh", the default, uses "nodes"
//	  "groups":    {"group:ops": ["alice@example.com", "bob@example.com"]},
//	  "tagOwners": {"tag:server": ["group:ops"], "tag:prod": ["group:ops"], "tag:ci": ["group:ops"]},
//	  "ssh": [
//	    {"action": "accept", "src": ["group:ops"], "dst": ["tag:server"], "users": ["autogroup:nonroot"]},
//	    {"action": "accept", "src": ["tag:ci"], "dst": ["tag:server"], "users": ["deploy"]},
//	    {"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["="]},
//	  ],
//	  "tests": [
//	    {"src": "alice@example.com", "dst": "tag:server", "accept": ["deploy"], "deny": ["root"]},
//	    {"src": "tag:ci", "dst": "tag:server,tag:prod", "accept": ["deploy"]},
//	  ],
//	}
//
// A tailnet document has no "nodes" (an error if present). It is
// evaluated on Request.Caller and Request.Server, the identities the
// coordinator vouches for (its WhoIs), not on the keys; without them
// Evaluate rejects with an error. A node with tags is a tagged node and
// belongs to no one, whatever owner the coordinator reports for it (as in
// Tailscale); an untagged node belongs to its user, named by login
// (compared ignoring case).
//
//   - "src" takes a login (alice@example.com: the untagged nodes of that
//     user); group:NAME (logins); tag:NAME; autogroup:member (every
//     untagged node with an owner); autogroup:tagged (every tagged node);
//     or * (every node).
//   - "dst" takes tag:NAME (a server with that tag); autogroup:self (a
//     server of the caller's own user); a login (an untagged server that
//     user owns); or * (every server; reject rules only, see below).
//
// Logins are written as the coordinator reports them (its LoginName).
// headscale reports a user's email when the user has one, so give users
// one (headscale users create alice --email alice@example.com): a user
// whose login has no '@' still owns its nodes (autogroup:member,
// autogroup:self, "=") but no rule can name it. A login need not own a
// node when the document is loaded; tags must still be declared in
// "tagOwners". What the coordinator reports is only ever a login or a
// tag: a user called "tag:server" or "*" gets nothing of those.
//
// "users" works as on the mesh: "=" and {localpart} take the local part
// of the caller's login (alice@example.com → alice); a tagged caller has
// no owner, so it never matches "=", a template or autogroup:member.
//
// With no list of nodes, the safety rule is kept twice. At load, an accept
// or check rule may name in dst only tags, autogroup:self, and a login
// whose src is that same user alone (the login itself, or groups that hold
// only that login): dst * and a login reached from any other source
// (another login, a group with someone else, a tag, an autogroup, *) are
// refused, naming the rule and the source. At evaluation, an accept or
// check rule never lets a caller into an untagged server whose owner is not
// the caller's own, whatever the rule says. Reject rules may name any
// destination, * included.
//
// Tests name identities, not nodes: "src" and "dst" are a login (an
// untagged node of that user) or tags ("tag:ci", or "tag:ci,tag:x" for a
// node with several), and the tags must be declared. [Document.Explain]
// and `sshmesh policy explain` take the same forms, so a tailnet document
// is checked and explained without a live tailnet.
//
// # Tests
//
// Each entry of "tests" names a "src" and a "dst" node and lists login names
// under "accept", "check" and "deny" (the decision each must get), with an
// optional "at" time (RFC 3339; default now). They run on every load: a
// document whose tests fail does not load, and the error says why:
//
//	policy.hujson:20:60: tests[0]: alice-laptop → build-1 as root: want deny, got accept by ssh[0] (line 12)
//
// `sshmesh policy check FILE` runs the same checks; `sshmesh policy explain`
// prints a [Document.Explain].
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

// Identifier is a [Policy] that knows nodes by key, as a *[Document] does.
// A server names its callers with it (node, owner, tags in the log) and
// refuses to start when the policy does not name the server's own node.
type Identifier interface {
	// Node returns what the policy says about the node with key, and
	// whether it names that node at all.
	Node(key meshkey.Public) (Identity, bool)
}

// Func adapts an ordinary function to [Policy].
type Func func(ctx context.Context, r Request) (Decision, error)

// Evaluate calls f(ctx, r).
func (f Func) Evaluate(ctx context.Context, r Request) (Decision, error) { return f(ctx, r) }

// Request is one login attempt.
type Request struct {
	// Key is the caller's WireGuard public key, as the mesh proved it
	// (sshmesh.Peer.Key).
	Key meshkey.Public
	// Addr is the caller's mesh address and port (sshmesh.Peer.Addr).
	Addr netip.AddrPort
	// Self is the public key of the node that was reached, the server
	// (sshmesh.Peer.Self).
	Self meshkey.Public
	// User is the login name the client asked for (ssh user@host).
	User string
	// RootUser says that User is a root account on the destination host:
	// its uid is 0, whatever its name (a toor-style alias). The server
	// sets it from the host's account database. A root account, "root"
	// or not, is allowed only by a rule that names it explicitly.
	RootUser bool
	// Caller is the caller's identity as the transport's coordinator vouches
	// for it (a tailnet's WhoIs: node name, user login as Owner, tags); nil on
	// the file-based mesh, where the document's "nodes" name callers by Key.
	Caller *Identity
	// Server is the reached node's own identity as the coordinator vouches for
	// it (its tags, or its owner); nil on the file-based mesh.
	Server *Identity
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
// be set; the rest is filled where the policy names the node. On a tailnet
// the coordinator fills it (see Request.Caller): Key is the Tailscale node
// key, Node the first label of the node's MagicDNS name, Owner the user's
// login ("" for a tagged node) and Tags the node's tags.
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
	Action    Action // accept, check or reject
	LocalUser string // the local account to run as (accept and check)
	// Message is shown to the client on reject (or with a check); "" means a
	// plain "access denied".
	Message string
	// Rule names the rule that decided, e.g. "ssh[2]"; "" when no rule
	// matched (default deny) or the policy has no rules.
	Rule string
	// RulePos is where that rule is written, e.g. "policy.hujson:14", or "".
	RulePos string
	// RuleID identifies the rule by what it says, not where it stands: a
	// digest of its canonical JSON (comments, spacing and key order aside).
	// It survives a reorder of the rules and changes with any change to the
	// rule. Check approvals are keyed by it. "" when no rule matched; a
	// Policy of its own may leave it empty (Rule is used instead).
	RuleID string
	// Caller is what the policy knows about the caller (node name, owner,
	// tags). Its Tags are shared with the document (Evaluate allocates
	// nothing): read them, never change them in place; the accessors such
	// as [Document.Node] return copies.
	Caller Identity

	// AcceptEnv lists environment names (with * wildcards) the client may
	// set. Loader variables (LD_*, DYLD_*, ...) are refused whatever it says.
	AcceptEnv []string
	// CheckPeriod is how long a check approval lasts (Check only).
	CheckPeriod time.Duration
	// CheckProof is what a check asks of the person (Check only): "" or
	// [CheckProofPasskey], a passkey enrolled for the caller's owner;
	// [CheckProofOIDC], a sign-in at the server's identity provider as the
	// caller's owner; [CheckProofMesh], only a visit from a node of the
	// caller's owner.
	CheckProof string
	// Expires is when the rule stops matching; sessions it admitted end then.
	// Zero means never.
	Expires time.Time
	// SessionDuration caps how long a session may last; 0 means no cap.
	SessionDuration time.Duration
	// AgentForward allows ssh -A.
	AgentForward bool
	// LocalForward lists the host:port patterns (or unix socket path
	// patterns) that ssh -L and -D may reach; empty means none.
	LocalForward []string
	// RemoteForward lists the host:port patterns (or unix socket path
	// patterns) that ssh -R may listen on; empty means none.
	RemoteForward []string
	// Record asks for the sessions to be recorded.
	Record bool
	// OnRecordingFailure is "fail-open" (the default, "") or "fail-closed".
	OnRecordingFailure string
	// Recorders names the recorder nodes the sessions stream to (node
	// names and tag:NAME, in order; see [Document.Nodes] to resolve them).
	// Empty means the server's own recording directory.
	Recorders []string
}

// Allowed reports whether the decision lets the login in (accept or check).
func (d Decision) Allowed() bool { return d.Action == Accept || d.Action == Check }

// AddrResolver names the peer that owns a remote address on the mesh; a
// *netstack.Node is one (its WhoIs).
type AddrResolver interface {
	WhoIs(remoteAddr string) (meshkey.Public, bool)
}

// WhoIs answers "who is calling?" for any protocol on the mesh in one call:
// the peer that owns remoteAddr ("ip:port" as net/http's
// Request.RemoteAddr gives it), as peers proves it, with the node name,
// owner and tags id gives it (a *Document does). ok is false when no peer
// owns the address; a peer id does not name comes back with its Key only.
func WhoIs(peers AddrResolver, id Identifier, remoteAddr string) (caller Identity, ok bool) {
	key, ok := peers.WhoIs(remoteAddr)
	if !ok {
		return Identity{}, false
	}
	if named, known := id.Node(key); known {
		return named, true
	}
	return Identity{Key: key}, true
}
