package policy

import (
	"hash/maphash"
	"slices"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
)

// The structures Evaluate reads, built once at load and laid out for few
// cache misses: at 100,000 nodes and 10,000 rules an evaluation costs
// what its memory loads cost, not what its comparisons do.
//
//   - keyIndex finds a node by key with one load from a flat table (a Go
//     map of 100,000 32-byte keys costs three or four).
//   - ruleLists holds, for every principal, the rules that name it, in one
//     flat array: a count is two adjacent loads, not a slice header of its
//     own per principal (most principals, node names, have no rules).
//   - ruleHot holds what a rule's match needs before its login names, in a
//     small record of its own, with its principals in one shared array.
//   - nodeHot holds a node's owner as a number and the few of its dst
//     principals that rules name: for most nodes none, and then Evaluate
//     reads no rule list at all.
//
// match (match.go) walks the shortest of the candidate lists these give;
// the randomized TestIndexMatchesReference and FuzzIndex hold it to a
// plain scan of every rule as written.

// keyIndex finds a node by its WireGuard key: open addressing with linear
// probing over a table at most half full, each slot holding the high bits
// of the key's hash and the node's index plus one (0: empty). The hash is
// seeded when the nodes are compiled (a Reparse that reuses them keeps
// the seed), so keys chosen to collide (a node's key is whatever its
// owner made) cannot be chosen in advance; a found slot is confirmed
// against the node's whole key.
type keyIndex struct {
	seed  maphash.Seed
	slots []uint64
}

// newKeyIndex indexes the keys of nodes.
func newKeyIndex(nodes []node) keyIndex {
	x := keyIndex{seed: maphash.MakeSeed()}
	if len(nodes) == 0 {
		return x
	}
	size := 2
	for size < 2*len(nodes) {
		size <<= 1
	}
	x.slots = make([]uint64, size)
	mask := uint64(size - 1)
	for n := range nodes {
		h := maphash.Comparable(x.seed, nodes[n].id.Key)
		i := h & mask
		for x.slots[i] != 0 {
			i = (i + 1) & mask
		}
		x.slots[i] = h&^0xffffffff | uint64(n+1)
	}
	return x
}

// find returns the index in nodes of the node with key k.
func (x *keyIndex) find(nodes []node, k meshkey.Public) (int32, bool) {
	if len(x.slots) == 0 {
		return -1, false
	}
	h := maphash.Comparable(x.seed, k)
	return x.probe(nodes, k, h, x.slots[h&uint64(len(x.slots)-1)])
}

// find2 is find for two keys, a and b, with the first loads from the
// table side by side: at 100,000 nodes each is a miss in the cache.
func (x *keyIndex) find2(nodes []node, a, b meshkey.Public) (ia int32, okA bool, ib int32, okB bool) {
	if len(x.slots) == 0 {
		return -1, false, -1, false
	}
	ha, hb := maphash.Comparable(x.seed, a), maphash.Comparable(x.seed, b)
	mask := uint64(len(x.slots) - 1)
	ea, eb := x.slots[ha&mask], x.slots[hb&mask]
	ia, okA = x.probe(nodes, a, ha, ea)
	ib, okB = x.probe(nodes, b, hb, eb)
	return ia, okA, ib, okB
}

// probe looks for key k of hash h from its first slot, whose entry is e.
func (x *keyIndex) probe(nodes []node, k meshkey.Public, h, e uint64) (int32, bool) {
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		if i != h&mask {
			e = x.slots[i]
		}
		if e == 0 {
			return -1, false
		}
		if e>>32 == h>>32 {
			if n := int32(uint32(e)) - 1; nodes[n].id.Key == k {
				return n, true
			}
		}
	}
}

// ruleLists maps a principal to the rules naming it, in document order:
// the rules of p are list[start[p]:start[p+1]].
type ruleLists struct {
	start []int32
	list  []int32
}

// newRuleLists lists, for each of n principals, the rules whose
// principals (principalsOf(i) for rule i) include it.
func newRuleLists(n int, rules int, principalsOf func(int) []int32) ruleLists {
	l := ruleLists{start: make([]int32, n+1)}
	for i := range rules {
		for _, p := range principalsOf(i) {
			l.start[p+1]++
		}
	}
	for p := range n {
		l.start[p+1] += l.start[p]
	}
	l.list = make([]int32, l.start[n])
	next := make([]int32, n)
	copy(next, l.start[:n])
	for i := range rules {
		for _, p := range principalsOf(i) {
			l.list[next[p]] = int32(i)
			next[p]++
		}
	}
	return l
}

// of returns the rules naming principal p, in document order.
func (l *ruleLists) of(p int32) []int32 {
	if p < 0 || int(p)+1 >= len(l.start) {
		return nil // a principal no rule was indexed with
	}
	return l.list[l.start[p]:l.start[p+1]]
}

// count is len(l.of(p)).
func (l *ruleLists) count(p int32) int {
	if p < 0 || int(p)+1 >= len(l.start) {
		return 0
	}
	return int(l.start[p+1] - l.start[p])
}

// ruleHot is what match reads of a rule to decide whether it covers a
// caller and a destination and is in force: its src and dst principals
// (sorted, in Document.hotPrincipals) and its expiry.
type ruleHot struct {
	srcOff, srcLen int32
	dstOff, dstLen int32
	expSec         int64 // expiry in Unix seconds and nanoseconds, when hasExp
	expNsec        int32
	action         Action
	self           bool // dst has autogroup:self
	hasExp         bool
	users          uint8 // a summary of the rule's users: usersAny, ...
}

// The bits of ruleHot.users.
const (
	usersAny     = 1 << iota // "*"
	usersNonroot             // autogroup:nonroot
	usersNames               // login names listed
	usersByOwner             // "=" or templates
)

// clock is a time as ruleHot compares it.
type clock struct {
	sec  int64
	nsec int32
}

func clockOf(t time.Time) clock { return clock{t.Unix(), int32(t.Nanosecond())} }

// inForce reports whether the rule has not expired at now (it stops
// matching at the instant it expires, as !now.Before(expires) says).
func (h *ruleHot) inForce(now clock) bool {
	return !h.hasExp || now.sec < h.expSec || now.sec == h.expSec && now.nsec < h.expNsec
}

// indexRules builds the rule lists and hot records of doc's rules. It
// runs once, after the rules are compiled, with every principal known.
func (doc *Document) indexRules() {
	rules := doc.rules
	n := doc.numPrincipals()
	doc.srcRules = newRuleLists(n, len(rules), func(i int) []int32 { return rules[i].srcP })
	doc.dstRules = newRuleLists(n, len(rules), func(i int) []int32 { return rules[i].dstP })
	doc.selfRules, doc.wildUserRules = nil, nil
	doc.userRules = map[string][]int32{}
	total := 0
	for i := range rules {
		total += len(rules[i].srcP) + len(rules[i].dstP)
	}
	doc.hot = make([]ruleHot, len(rules))
	doc.hotPrincipals = make([]int32, 0, total)
	for i := range rules {
		r := &rules[i]
		ri := int32(i)
		h := &doc.hot[i]
		h.srcOff, h.srcLen = int32(len(doc.hotPrincipals)), int32(len(r.srcP))
		doc.hotPrincipals = append(doc.hotPrincipals, r.srcP...)
		h.dstOff, h.dstLen = int32(len(doc.hotPrincipals)), int32(len(r.dstP))
		doc.hotPrincipals = append(doc.hotPrincipals, r.dstP...)
		h.action, h.self = r.action, r.self
		if r.users.any {
			h.users |= usersAny
		}
		if r.users.nonroot {
			h.users |= usersNonroot
		}
		if len(r.users.names) > 0 {
			h.users |= usersNames
		}
		if r.users.same || len(r.users.templates) > 0 {
			h.users |= usersByOwner
		}
		if !r.expires.IsZero() {
			c := clockOf(r.expires)
			h.hasExp, h.expSec, h.expNsec = true, c.sec, c.nsec
		}
		if r.self {
			doc.selfRules = append(doc.selfRules, ri)
		}
		for _, u := range r.users.names {
			doc.userRules[u] = append(doc.userRules[u], ri)
		}
		if u := &r.users; u.any || u.nonroot || u.same || len(u.templates) > 0 {
			doc.wildUserRules = append(doc.wildUserRules, ri)
		}
	}
	if doc.nodeSet != nil {
		doc.keys = doc.nodeSet.keys // built once for the nodes, shared by Reparse
	} else {
		doc.keys = newKeyIndex(doc.nodes)
	}
	doc.indexNodes()
}

// nodeHot is what Evaluate reads of a node on the mesh besides its key and
// identity: its owner, as a number, and where the principals of its that
// some rule names in dst are listed. Most nodes (untagged ones no rule
// names by name) have none, and Evaluate then reads no rule list at all.
type nodeHot struct {
	owner int32 // the principal of the node's owner; -1 for a tagged node
	dst   int32 // ruledDstP[dst] is the length of the list that follows; 0: none
}

// indexNodes builds doc.nodeHot and doc.ruledDstP.
func (doc *Document) indexNodes() {
	doc.nodeHot = make([]nodeHot, len(doc.nodes))
	doc.ruledDstP = []int32{0}   // the empty list, shared
	var unnamed map[string]int32 // owners without a principal: none, see compiler.nodes
	for i := range doc.nodes {
		n, h := &doc.nodes[i], &doc.nodeHot[i]
		h.owner = -1
		if o := n.id.Owner; o != "" {
			p, ok := doc.principalByName(o)
			if !ok {
				if unnamed == nil {
					unnamed = map[string]int32{}
				}
				if p, ok = unnamed[o]; !ok {
					p = int32(doc.numPrincipals() + len(unnamed))
					unnamed[o] = p
				}
			}
			h.owner = p
		}
		start := len(doc.ruledDstP)
		doc.ruledDstP = append(doc.ruledDstP, 0)
		for _, p := range n.dstP {
			if doc.dstRules.count(p) > 0 {
				doc.ruledDstP = append(doc.ruledDstP, p)
			}
		}
		if k := len(doc.ruledDstP) - start - 1; k > 0 {
			doc.ruledDstP[start], h.dst = int32(k), int32(start)
		} else {
			doc.ruledDstP = doc.ruledDstP[:start]
		}
	}
}

// ruledDst returns the dst principals of the node of h that some rule
// names.
func (doc *Document) ruledDst(h nodeHot) []int32 {
	n := doc.ruledDstP[h.dst]
	return doc.ruledDstP[h.dst+1 : h.dst+1+n]
}

// overlaps reports whether the sorted rule principals and the (short)
// sorted node principals share one.
func overlaps(ruleP, nodeP []int32) bool {
	for _, p := range nodeP {
		if len(ruleP) <= 8 {
			if slices.Contains(ruleP, p) {
				return true
			}
		} else if _, ok := slices.BinarySearch(ruleP, p); ok {
			return true
		}
	}
	return false
}
