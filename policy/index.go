package policy

import (
	"slices"
	"time"
)

// The structures Evaluate reads, built once at load and laid out for few
// cache misses: at 100,000 nodes and 10,000 rules an evaluation costs
// what its memory loads cost, not what its comparisons do.
//
//   - keyIndex (keyindex.go) finds a node by key with one load from a
//     flat table (a Go map of 100,000 32-byte keys costs three or four).
//   - ruleLists holds, for every principal, the rules that name it, in one
//     flat array: a count is two adjacent loads, not a slice header of its
//     own per principal (most principals, node names, have no rules).
//   - ruleHot holds what a rule's match needs before its login names, in a
//     small record of its own, with its principals in one shared array.
//   - classDst lists, per class of nodes (those with one owner, or one
//     set of tags), the few of its dst principals that rules name: for
//     most classes none, and then Evaluate reads no rule list at all
//     (but that of the node's name, when a rule names it).
//
// match (match.go) walks the shortest of the candidate lists these give;
// the randomized TestIndexMatchesReference and FuzzIndex hold it to a
// plain scan of every rule as written.

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
	doc.indexClasses()
}

// indexClasses builds doc.classDst and doc.ruledDstP.
func (doc *Document) indexClasses() {
	ns := doc.nodeSet
	if ns == nil {
		return
	}
	doc.dstNamed = make([]uint64, (ns.len()+63)/64)
	for i := range ns.len() {
		if doc.dstRules.count(int32(i)) > 0 {
			doc.dstNamed[i/64] |= 1 << (i % 64)
		}
	}
	doc.classDst = make([]int32, len(ns.classes))
	doc.ruledDstP = []int32{0} // the empty list, shared
	for c := range ns.classes {
		start := len(doc.ruledDstP)
		doc.ruledDstP = append(doc.ruledDstP, 0)
		_, dstP := ns.principalsOf(&ns.classes[c])
		for _, p := range dstP {
			if doc.dstRules.count(p) > 0 {
				doc.ruledDstP = append(doc.ruledDstP, p)
			}
		}
		if k := len(doc.ruledDstP) - start - 1; k > 0 {
			doc.ruledDstP[start], doc.classDst[c] = int32(k), int32(start)
		} else {
			doc.ruledDstP = doc.ruledDstP[:start]
		}
	}
}

// ruledDst returns the dst principals of the nodes of class c (but their
// names) that some rule names.
func (doc *Document) ruledDst(c int32) []int32 {
	at := doc.classDst[c]
	n := doc.ruledDstP[at]
	return doc.ruledDstP[at+1 : at+1+n]
}

// ruledName returns the principal of node i's name if some rule names it
// in dst, else -1.
func (doc *Document) ruledName(i int32) int32 {
	if doc.dstNamed[i/64]&(1<<(i%64)) != 0 {
		return i
	}
	return -1
}

// names reports whether the sorted rule principals name n (one of src or
// dst: nodeP is n.srcP or n.dstP).
func names(ruleP []int32, n *node, nodeP []int32) bool {
	// Node names have the lowest ids: a rule that names no node (most)
	// starts past them.
	if n.name >= 0 && len(ruleP) > 0 && ruleP[0] <= n.name {
		if _, ok := slices.BinarySearch(ruleP, n.name); ok {
			return true
		}
	}
	return overlaps(ruleP, nodeP)
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
