package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/tailscale/hujson"
)

// DefaultCheckPeriod is how long a check approval lasts when a check rule
// sets no checkPeriod.
const DefaultCheckPeriod = 12 * time.Hour

// Document is a parsed, checked policy document (see the package doc for its
// format). It implements [Policy]: each node evaluates the same document with
// itself as Request.Self.
//
// Evaluation is precomputed at load: Evaluate looks the two keys up, then
// walks only the rules that name the caller or the destination (by name,
// owner, group, tag or autogroup), and does not allocate.
//
// A Document is immutable once parsed and safe for concurrent use, except
// for Now, which must be set before the Document is shared.
type Document struct {
	// Now returns the time against which rule expiry is judged. nil means
	// time.Now.
	Now func() time.Time

	file   string
	nodes  []node
	byKey  map[meshkey.Public]int32
	byName map[string]int32
	groups map[string][]string // group → member emails, flattened and sorted
	rules  []rule
	tests  []test

	// By principal id (see compiler.principal): the rules whose src, or
	// dst, names the principal, in document order.
	srcRules  [][]int32
	dstRules  [][]int32
	selfRules []int32 // rules with autogroup:self in dst, in order
	// The rules whose users name a login explicitly, by name; and the rules
	// whose users have a wildcard form (*, =, autogroup:nonroot, templates).
	userRules     map[string][]int32
	wildUserRules []int32
}

// node is one entry of "nodes".
type node struct {
	id        Identity
	localpart string  // of the owner, for "=" and {localpart}; "" if tagged
	srcP      []int32 // sorted principals a src selector may name it by
	dstP      []int32 // sorted principals a dst selector may name it by
	off       int
}

// rule is one entry of "ssh".
type rule struct {
	name     string // "ssh[3]"
	line     int
	action   Action
	src, dst []string // as written (owners lowercased), for Explain
	srcP     []int32  // sorted principals of src
	dstP     []int32  // sorted principals of dst (autogroup:self aside)
	self     bool     // dst has autogroup:self
	users    users
	expires  time.Time
	dec      Decision // the options; Caller and LocalUser are filled per request
}

// test is one entry of "tests".
type test struct {
	field    string
	src, dst int32
	at       time.Time // zero: now
	want     []testCase
}

type testCase struct {
	user   string
	action Action
	off    int
}

// Parse parses and checks a policy document in HuJSON, then runs its
// embedded tests (at each test's "at" time, or now). file names the
// document in errors, which read "file:line:col: field: problem". All
// problems found are returned, joined with [errors.Join], one per line; each
// is an [*Error].
func Parse(data []byte, file string) (*Document, error) {
	v, err := hujson.Parse(data)
	if err != nil {
		return nil, syntaxError(file, err)
	}
	c := newCompiler(file, data)
	c.document(&v)
	if len(c.errs) == 0 {
		c.doc.runTests(&c.decoder)
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return c.doc, nil
}

// Load reads and parses the policy document at path; errors name path.
func Load(path string) (*Document, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return Parse(data, path)
}

// syntaxError turns hujson's "hujson: line L, column C: msg" into an *Error.
func syntaxError(file string, err error) error {
	var line, col int
	msg := err.Error()
	if _, serr := fmt.Sscanf(msg, "hujson: line %d, column %d:", &line, &col); serr != nil {
		return &Error{File: file, Line: 1, Column: 1, Err: fmt.Errorf("syntax error: %w", err)}
	}
	_, rest, _ := strings.Cut(msg, "column ")
	_, rest, _ = strings.Cut(rest, ": ")
	return &Error{File: file, Line: line, Column: col, Err: fmt.Errorf("syntax error: %s", rest)}
}

// Evaluate decides r with Request.Self as this node. A caller whose key is
// not in the document is rejected (Rule "", Message ""), as is a login no
// rule matches. A Dst not in the document is an error: the server is not
// part of this policy.
//
// The slices in the Decision are shared with the Document; do not modify them.
func (doc *Document) Evaluate(_ context.Context, r Request) (Decision, error) {
	di, ok := doc.byKey[r.Self]
	if !ok {
		return Decision{}, fmt.Errorf("policy: %s: the destination %s is not a node in the document", doc.file, r.Self.Short())
	}
	si, ok := doc.byKey[r.Key]
	if !ok {
		return Decision{Caller: Identity{Key: r.Key}}, nil
	}
	now := doc.now()
	return doc.decision(si, doc.match(si, di, loginOf(r), now), r.User), nil
}

func (doc *Document) now() time.Time {
	if doc.Now != nil {
		return doc.Now()
	}
	return time.Now()
}

// decision builds the Decision of rule ri (-1: none) for caller si.
func (doc *Document) decision(si, ri int32, user string) Decision {
	if ri < 0 {
		return Decision{Caller: doc.nodes[si].id}
	}
	r := &doc.rules[ri]
	d := r.dec
	d.Caller = doc.nodes[si].id
	if r.action != Reject {
		d.LocalUser = user
	}
	return d
}

// match returns the first rule that lets (or refuses) si into di as user
// at now, or -1. Each rule is listed under the principals its src and dst
// name and under the login names its users name; match walks whichever of
// the three sides has the shortest lists: the rules naming the caller, the
// rules naming the destination, or the rules naming the login.
func (doc *Document) match(si, di int32, user login, now time.Time) int32 {
	s, d := &doc.nodes[si], &doc.nodes[di]
	self := s.id.Owner != "" && s.id.Owner == d.id.Owner
	best := int32(len(doc.rules))
	srcN, dstN := 0, 0
	for _, p := range s.srcP {
		srcN += len(doc.srcRules[p])
	}
	for _, p := range d.dstP {
		dstN += len(doc.dstRules[p])
	}
	if self {
		dstN += len(doc.selfRules)
	}
	named := doc.userRules[user.name]
	userN := len(named) + len(doc.wildUserRules)
	switch {
	case userN <= srcN && userN <= dstN:
		best = doc.scan(named, best, s, d, self, user, now)
		best = doc.scan(doc.wildUserRules, best, s, d, self, user, now)
	case srcN <= dstN:
		for _, p := range s.srcP {
			best = doc.scan(doc.srcRules[p], best, s, d, self, user, now)
		}
	default:
		for _, p := range d.dstP {
			best = doc.scan(doc.dstRules[p], best, s, d, self, user, now)
		}
		if self {
			best = doc.scan(doc.selfRules, best, s, d, self, user, now)
		}
	}
	if best == int32(len(doc.rules)) {
		return -1
	}
	return best
}

// scan returns the first rule in the ascending list, before best, that
// covers s and d and admits user at now; or best.
func (doc *Document) scan(list []int32, best int32, s, d *node, self bool, user login, now time.Time) int32 {
	for _, ri := range list {
		if ri >= best {
			break
		}
		r := &doc.rules[ri]
		if overlaps(r.srcP, s.srcP) && (r.self && self || overlaps(r.dstP, d.dstP)) && r.admits(s, user, now) {
			return ri
		}
	}
	return best
}

// overlaps reports whether the sorted rule principals and the (short)
// sorted node principals share one.
func overlaps(ruleP, nodeP []int32) bool {
	for _, p := range nodeP {
		if _, ok := slices.BinarySearch(ruleP, p); ok {
			return true
		}
	}
	return false
}

// admits reports whether r, which covers the caller and destination, is
// in force at now and lets caller s log in as user.
func (r *rule) admits(s *node, user login, now time.Time) bool {
	if !r.expires.IsZero() && !now.Before(r.expires) {
		return false
	}
	return r.users.match(user, s.localpart, r.action == Reject)
}

// Node returns what the document says about the node with key, and whether
// it names that node at all. A server uses it to refuse to start when its
// own key is not in the document.
func (doc *Document) Node(key meshkey.Public) (Identity, bool) {
	i, ok := doc.byKey[key]
	if !ok {
		return Identity{Key: key}, false
	}
	return doc.nodes[i].id, true
}

// NodeByName returns the node called name, and whether there is one.
func (doc *Document) NodeByName(name string) (Identity, bool) {
	i, ok := doc.byName[name]
	if !ok {
		return Identity{}, false
	}
	return doc.nodes[i].id, true
}

// Nodes returns what the document says about each of its nodes, in the
// document's order: a way to resolve a tag to its nodes.
func (doc *Document) Nodes() []Identity {
	ids := make([]Identity, len(doc.nodes))
	for i, n := range doc.nodes {
		ids[i] = n.id
	}
	return ids
}

// Stats returns how many nodes, ssh rules and test cases (one per listed
// user of each test) the document has.
func (doc *Document) Stats() (nodes, rules, tests int) {
	for _, t := range doc.tests {
		tests += len(t.want)
	}
	return len(doc.nodes), len(doc.rules), tests
}

// File returns the file name the document was parsed with.
func (doc *Document) File() string { return doc.file }

// runTests runs the embedded tests, recording each failure.
func (doc *Document) runTests(d *decoder) {
	for _, t := range doc.tests {
		at := t.at
		if at.IsZero() {
			at = time.Now()
		}
		src, dst := &doc.nodes[t.src], &doc.nodes[t.dst]
		for _, w := range t.want {
			ri := doc.match(t.src, t.dst, loginNamed(w.user), at)
			got := Reject
			by := " (no rule matched)"
			if ri >= 0 {
				got = doc.rules[ri].action
				by = " by " + doc.rules[ri].name + " (line " + strconv.Itoa(doc.rules[ri].line) + ")"
			}
			if got != w.action {
				d.errorf(w.off, t.field, "%s → %s as %s: want %s, got %s%s",
					src.id.Node, dst.id.Node, w.user, testVerb(w.action), testVerb(got), by)
			}
		}
	}
}

// testVerb names an action as the tests' keys do: accept, check, deny.
func testVerb(a Action) string {
	if a == Reject {
		return "deny"
	}
	return a.String()
}
