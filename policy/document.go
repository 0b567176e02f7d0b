package policy

import (
	"context"
	"crypto/sha256"
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

// What a check rule's "checkProof" asks of the person who approves.
const (
	// CheckProofPasskey, the default, asks for a WebAuthn assertion from a
	// passkey enrolled for the caller's owner.
	CheckProofPasskey = "passkey"
	// CheckProofMesh asks only for a visit from a node of the caller's
	// owner: whoever holds that node's key can approve.
	CheckProofMesh = "mesh"
	// CheckProofOIDC asks for a sign-in at the server's identity provider
	// whose verified email is the caller's owner.
	CheckProofOIDC = "oidc"
)

// Document is a parsed, checked policy document (see the package doc for its
// format). It implements [Policy]: each node evaluates the same document with
// itself as Request.Self.
//
// Evaluation is precomputed at load (see index.go): Evaluate looks the two
// keys up (on a tailnet: the caller's login and tags, the server's tags or
// owner), then walks only the rules that name the destination, the caller
// or the login (whichever list is shortest; none at all for a node no rule
// names in dst, unless autogroup:self applies), and does not allocate (on
// a tailnet, except to lowercase a login the coordinator spells with
// capitals).
//
// A Document is immutable once parsed and safe for concurrent use, except
// for Now, which must be set before the Document is shared.
type Document struct {
	// Now returns the time against which rule expiry is judged. nil means
	// time.Now.
	Now func() time.Time

	file    string
	tailnet bool // "identity": "tailnet": callers and servers come from Request.Caller and Request.Server
	// nodeSet holds the nodes, their indexes and names; documents Reparse
	// makes from this one share it. nil on a tailnet.
	nodeSet *nodeSet
	nodesAt [2]int              // where the "nodes" value is in the file, from [0] to [1]
	sum     [sha256.Size]byte   // of the bytes parsed (see Sum)
	groups  map[string][]string // group → member emails, flattened and sorted
	rules   []rule
	tests   []test

	// principals maps every name a rule uses (login, tag, autogroup, *)
	// but those of the nodes (in nodeSet) to its id; a tailnet document,
	// which has no nodes, names a caller with it.
	principals map[string]int32
	// The ids of *, autogroup:member and autogroup:tagged, or -1 where no
	// rule uses them: every tailnet request needs them, without a lookup.
	anyoneP, memberP, taggedP int32
	// shortPrincipals is principals for the names shorter than 64 bytes
	// (every usual login and tag) by shortKey, in a tailnet document: a key
	// held in the map itself is compared without reading a string elsewhere
	// in memory, which made a login's lookup cost more than a WireGuard
	// key's on the mesh.
	shortPrincipals map[shortKey]int32
	// By principal id (see compiler.principal): the rules whose src, or
	// dst, names the principal, in document order.
	srcRules  ruleLists
	dstRules  ruleLists
	selfRules []int32 // rules with autogroup:self in dst, in order
	// hot has one record per rule, what match reads of it (see ruleHot),
	// with the rules' principals in hotPrincipals (see index.go).
	hot           []ruleHot
	hotPrincipals []int32
	// classDst has, per class of the nodes (see nodeClass), where the
	// principals of its that rules name in dst are listed in ruledDstP: 0
	// for none (most classes), and then Evaluate reads no rule list at
	// all for the class; ruledDstP[classDst[c]] is the length of the
	// list that follows.
	classDst  []int32
	ruledDstP []int32
	// dstNamed has bit i set when a rule names node i in dst: Evaluate
	// reads a bit a node (12.5 KB at 100,000 nodes), not the rule lists'
	// starts (400 KB).
	dstNamed []uint64
	// The rules whose users name a login explicitly, by name; and the rules
	// whose users have a wildcard form (*, =, autogroup:nonroot, templates).
	userRules     map[string][]int32
	wildUserRules []int32
}

// node is one entry of "nodes" as match reads it (see nodeSet.node), or
// on a tailnet a caller or server as Request.Caller or Request.Server
// describes it (see tailnetCaller).
type node struct {
	id Identity
	// name is the principal of the node's name (its index in the
	// nodeSet); -1 on a tailnet, whose nodes have none.
	name int32
	srcP []int32 // sorted principals a src selector may name it by, but its name
	dstP []int32 // sorted principals a dst selector may name it by, but its name
}

// localpart is the local part of n's owner, for "=" and {localpart}; ""
// if n is tagged.
func (n *node) localpart() string {
	lp, _, _ := strings.Cut(n.id.Owner, "@")
	return lp
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
	field            string
	src, dst         node
	srcName, dstName string    // as written, for errors
	at               time.Time // zero: now
	want             []testCase
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
	if err := checkSize(int64(len(data)), file); err != nil {
		return nil, err
	}
	// Plainly written nodes are compiled without a tree (see quickNodes).
	if start, end, ok := nodesValue(data); ok {
		if ns := quickNodes(data[start:end]); ns != nil {
			ns.sum = sha256.Sum256(data[start:end])
			if doc, ok, err := parseWith(ns, data, start, end, file); ok {
				return doc, err
			}
		}
	}
	return parseTree(data, file)
}

// parseTree is Parse from the HuJSON tree of the whole file.
func parseTree(data []byte, file string) (*Document, error) {
	v, err := hujson.Parse(data)
	if err != nil {
		return nil, syntaxError(file, err)
	}
	c := newCompiler(file, newLines(data))
	c.document(&v)
	doc, err := c.finish()
	if err == nil {
		if doc.nodeSet == nil {
			doc.sum = fileSum(data, nil, nil)
		} else {
			doc.nodeSet.sum = sha256.Sum256(data[doc.nodesAt[0]:doc.nodesAt[1]])
			doc.sum = fileSum(data[:doc.nodesAt[0]], &doc.nodeSet.sum, data[doc.nodesAt[1]:])
		}
	}
	return doc, err
}

// finish runs the embedded tests of a compiled document and returns it,
// or every problem found.
func (c *compiler) finish() (*Document, error) {
	c.gap = 0 // the document holds the file's offsets (see compiler.tests)
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

// maxDocumentSize is the largest policy document read: it keeps the
// offsets and counts of a compiled document (names' ends, node indexes)
// far from their types' limits.
const maxDocumentSize = 1 << 30

// checkSize refuses a document of size bytes over maxDocumentSize.
func checkSize(size int64, file string) error {
	if size > maxDocumentSize {
		return &Error{File: file, Line: 1, Column: 1, Err: fmt.Errorf("the document is %d bytes; at most %d are read", size, maxDocumentSize)}
	}
	return nil
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
// A tailnet document (see [Document.IdentitySource]) decides on
// Request.Caller and Request.Server instead of the keys, and fills
// Decision.Caller from Request.Caller; without them it rejects with an error.
//
// The slices in the Decision are shared with the Document; do not modify them.
func (doc *Document) Evaluate(_ context.Context, r Request) (Decision, error) {
	if doc.tailnet {
		return doc.evaluateTailnet(r)
	}
	ns := doc.nodeSet
	if ns == nil {
		ns = &nodeSet{} // no nodes: not a Document Parse made
	}
	di, dok, si, sok := ns.byKey.find2(ns.recs, r.Self, r.Key)
	if !dok {
		return Decision{}, fmt.Errorf("policy: %s: the destination %s is not a node in the document", doc.file, r.Self.Short())
	}
	if !sok {
		return Decision{Caller: Identity{Key: r.Key}}, nil
	}
	now := doc.now()
	s, d := ns.node(si), ns.unnamed(di)
	sc, dc := ns.recs[si].class, ns.recs[di].class
	self := sc == dc && s.id.Owner != "" // one class per owner: owned nodes have no tags
	ri := doc.matchOn(&s, &d, doc.ruledDst(dc), doc.ruledName(di), self, len(d.id.Tags) > 0, loginOf(r), now)
	return doc.decision(s.id, ri, r.User), nil
}

// evaluateTailnet is Evaluate for a tailnet document.
func (doc *Document) evaluateTailnet(r Request) (Decision, error) {
	if r.Caller == nil || r.Server == nil {
		return Decision{}, fmt.Errorf("policy: %s: a tailnet document needs the caller's and the server's identities from a tailnet (Request.Caller and Request.Server), and this request has none", doc.file)
	}
	var srcBuf, dstBuf [8]int32
	s := doc.tailnetCaller(r.Caller, srcBuf[:0])
	d := doc.tailnetServer(r.Server, dstBuf[:0])
	return doc.decision(*r.Caller, doc.match(&s, &d, loginOf(r), doc.now()), r.User), nil
}

// tailnetOwner returns the owner of id as a tailnet document sees it, and
// the principal of that login (-1 if no rule names it). A node with tags is
// a tagged node and belongs to no one, whatever owner the coordinator gives
// it; logins are compared ignoring case. Only a name with an '@' is a
// login: a user the coordinator calls "tag:server" or "*" is named by no
// rule.
func (doc *Document) tailnetOwner(id *Identity) (string, int32) {
	if len(id.Tags) > 0 || id.Owner == "" {
		return "", -1
	}
	o := id.Owner
	p := doc.principalID(o) // the usual login is lower case already
	if p < 0 || strings.IndexByte(o, '@') < 0 {
		if o = lower(o); o == id.Owner {
			return o, -1
		}
		if p = doc.principalID(o); p < 0 || strings.IndexByte(o, '@') < 0 {
			return o, -1
		}
	}
	return o, p
}

// shortKey is a name shorter than 64 bytes: its length, then its bytes.
type shortKey [64]byte

func makeShortKey(name string) (k shortKey) {
	k[0] = byte(len(name))
	copy(k[1:], name)
	return k
}

// principalID returns the id of principal name, or -1 if no rule uses it.
func (doc *Document) principalID(name string) int32 {
	if len(name) < len(shortKey{}) {
		if p, ok := doc.shortPrincipals[makeShortKey(name)]; ok {
			return p
		}
		return -1
	}
	if p, ok := doc.principalByName(name); ok {
		return p
	}
	return -1
}

// numPrincipals is the number of principals: the nodes' (doc.nodeSet)
// and those the rules add (doc.principals), whose ids follow.
func (doc *Document) numPrincipals() int {
	return doc.nodeSet.numPrincipals() + len(doc.principals)
}

// principalByName returns the id of principal name, whether a node's
// or another's.
func (doc *Document) principalByName(name string) (int32, bool) {
	if p, ok := doc.nodeSet.principal(name); ok {
		return p, true
	}
	p, ok := doc.principals[name]
	return p, ok
}

// lower folds the ASCII letters of s to lower case, and only those.
// Logins are compared ignoring ASCII case alone: Unicode case folding
// would turn a coordinator's login spelled with a look-alike (the Kelvin
// sign K lowers to k) into another user's login.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// tailnetCaller is a tailnet caller (see tailnetOwner) with the src
// principals that name it: *, and its tags and autogroup:tagged, or its
// owner's login and autogroup:member. Only the Owner and Tags of its id are
// set: they are all a rule looks at. buf holds the principals (it is
// appended to).
func (doc *Document) tailnetCaller(id *Identity, buf []int32) (n node) {
	var login int32
	n.id.Owner, login = doc.tailnetOwner(id)
	n.id.Tags = id.Tags
	n.name = -1
	buf = appendID(buf, doc.anyoneP)
	switch {
	case len(n.id.Tags) > 0:
		buf = appendID(buf, doc.taggedP)
		buf = doc.appendTags(buf, n.id.Tags)
	case n.id.Owner != "":
		buf = appendID(buf, login)
		buf = appendID(buf, doc.memberP)
	}
	n.srcP = buf
	return n
}

// tailnetServer is a tailnet server (see tailnetOwner) with the dst
// principals that name it: *, and its tags, or its owner's login.
func (doc *Document) tailnetServer(id *Identity, buf []int32) (n node) {
	var login int32
	n.id.Owner, login = doc.tailnetOwner(id)
	n.id.Tags = id.Tags
	n.name = -1
	buf = appendID(buf, doc.anyoneP)
	buf = doc.appendTags(buf, n.id.Tags)
	buf = appendID(buf, login)
	n.dstP = buf
	return n
}

// appendTags appends the ids of the tags a rule uses. Only a name that
// starts with tag: is a tag: a coordinator's tag called "*" or
// "autogroup:member" is named by no rule.
func (doc *Document) appendTags(buf []int32, tags []string) []int32 {
	for _, t := range tags {
		if strings.HasPrefix(t, "tag:") {
			buf = appendID(buf, doc.principalID(t))
		}
	}
	return buf
}

// appendID appends principal id p unless it is -1 (unused).
func appendID(buf []int32, p int32) []int32 {
	if p >= 0 {
		buf = append(buf, p)
	}
	return buf
}

// fixedPrincipals looks up, once, the principals every tailnet request
// uses, and fills shortPrincipals.
func (doc *Document) fixedPrincipals() {
	if doc.tailnet {
		doc.shortPrincipals = make(map[shortKey]int32, len(doc.principals))
		for name, p := range doc.principals {
			if len(name) < len(shortKey{}) {
				doc.shortPrincipals[makeShortKey(name)] = p
			}
		}
	}
	id := func(name string) int32 {
		if p, ok := doc.principalByName(name); ok {
			return p
		}
		return -1
	}
	doc.anyoneP, doc.memberP, doc.taggedP = id(anyone), id(autogroupMember), id(autogroupTagged)
}

// IdentitySource returns where the document's identities come from: "mesh"
// (its own "nodes", by WireGuard key) or "tailnet" (the tailnet's
// coordinator, through Request.Caller and Request.Server).
func (doc *Document) IdentitySource() string {
	if doc.tailnet {
		return identityTailnet
	}
	return identityMesh
}

func (doc *Document) now() time.Time {
	if doc.Now != nil {
		return doc.Now()
	}
	return time.Now()
}

// decision builds the Decision of rule ri (-1: none) for caller.
func (doc *Document) decision(caller Identity, ri int32, user string) Decision {
	if ri < 0 {
		return Decision{Caller: caller}
	}
	r := &doc.rules[ri]
	d := r.dec
	d.Caller = caller
	if r.action != Reject {
		d.LocalUser = user
	}
	return d
}

// Node returns what the document says about the node with key, and whether
// it names that node at all. A server uses it to refuse to start when its
// own key is not in the document.
func (doc *Document) Node(key meshkey.Public) (Identity, bool) {
	i, ok := doc.nodeSet.findKey(key)
	if !ok {
		return Identity{Key: key}, false
	}
	return doc.nodeSet.ownIdentity(i), true
}

// NodeByName returns the node called name, and whether there is one.
func (doc *Document) NodeByName(name string) (Identity, bool) {
	i, ok := doc.nodeSet.findName(name)
	if !ok {
		return Identity{}, false
	}
	return doc.nodeSet.ownIdentity(i), true
}

// Nodes returns what the document says about each of its nodes, in the
// document's order. It builds them for the call (100,000 nodes take
// 8.8 MB): to find the nodes with a name or tag, [Document.NodesNamed]
// allocates only for those.
func (doc *Document) Nodes() []Identity {
	ns := doc.nodeSet
	ids := make([]Identity, ns.len())
	for i := range ids {
		ids[i] = ns.ownIdentity(int32(i))
	}
	return ids
}

// NodesNamed returns, in the document's order, the nodes a name stands for
// as a recorder name does: the node called name, or every node with tag
// name (nil for none).
func (doc *Document) NodesNamed(name string) []Identity {
	ns := doc.nodeSet
	if ns == nil {
		return nil
	}
	if !strings.HasPrefix(name, "tag:") {
		if i, ok := ns.findName(name); ok {
			return []Identity{ns.ownIdentity(i)}
		}
		return nil
	}
	var ids []Identity
	for i, r := range ns.recs {
		if slices.Contains(ns.classes[r.class].tags, name) {
			ids = append(ids, ns.ownIdentity(int32(i)))
		}
	}
	return ids
}

// Stats returns how many nodes, ssh rules and test cases (one per listed
// user of each test) the document has. A tailnet document has no nodes.
func (doc *Document) Stats() (nodes, rules, tests int) {
	for _, t := range doc.tests {
		tests += len(t.want)
	}
	return doc.nodeSet.len(), len(doc.rules), tests
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
		for _, w := range t.want {
			ri := doc.match(&t.src, &t.dst, loginNamed(w.user), at)
			got := Reject
			by := " (no rule matched)"
			if ri >= 0 {
				got = doc.rules[ri].action
				by = " by " + doc.rules[ri].name + " (line " + strconv.Itoa(doc.rules[ri].line) + ")"
			}
			if got != w.action {
				d.errorf(w.off, t.field, "%s → %s as %s: want %s, got %s%s",
					t.srcName, t.dstName, w.user, testVerb(w.action), testVerb(got), by)
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
