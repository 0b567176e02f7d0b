package policy

import "time"

// shortList is the number of candidate rules below which match walks the
// destination's rules without first counting the caller's and the
// login's: counting them costs a few loads from memory, walking a short
// list costs less.
const shortList = 16

// match returns the first rule that lets (or refuses) s into d as user
// at now, or -1. Each rule is listed under the principals its src and dst
// name and under the login names its users name; match walks whichever of
// the three sides has the shortest lists: the rules naming the
// destination, the rules naming the caller, or the rules naming the login.
// Every rule that covers s and d is on each side, so any side gives the
// same first match.
//
// An accept or check rule never lets s into an untagged d of another owner
// (see reaches), whatever the rule says: the safety rule again, at
// evaluation.
func (doc *Document) match(s, d *node, user login, now time.Time) int32 {
	self := s.id.Owner != "" && s.id.Owner == d.id.Owner
	return doc.matchOn(s, d, d.dstP, d.name, self, len(d.id.Tags) > 0, user, now)
}

// matchOn is match with what Evaluate has found out already: dstP, the
// principals of d but its name that rules name in dst (d.dstP, or only
// those that some rule names), and dstName, the principal of d's name
// (d.name, or -1 when no rule names it), whether s and d have one owner
// (self) and whether d is tagged.
func (doc *Document) matchOn(s, d *node, dstP []int32, dstName int32, self, tagged bool, user login, now time.Time) int32 {
	m := matcher{doc: doc, s: s, d: d, self: self, reach: tagged || self, user: user, validUser: validUser(user.name),
		now: clockOf(now), best: int32(len(doc.rules))}
	dstN := doc.dstRules.count(dstName)
	for _, p := range dstP {
		dstN += doc.dstRules.count(p)
	}
	if self {
		dstN += len(doc.selfRules)
	}
	side := 'd'
	var named []int32
	if dstN > shortList {
		srcN := doc.srcRules.count(s.name)
		for _, p := range s.srcP {
			srcN += doc.srcRules.count(p)
		}
		named = doc.userRules[user.name]
		userN := len(named) + len(doc.wildUserRules)
		switch {
		case userN <= srcN && userN <= dstN:
			side = 'u'
		case srcN < dstN:
			side = 's'
		}
	}
	switch side {
	case 'u':
		m.scan(named)
		m.scan(doc.wildUserRules)
	case 's':
		m.srcNamed = true
		m.scan(doc.srcRules.of(s.name))
		for _, p := range s.srcP {
			m.scan(doc.srcRules.of(p))
		}
	default:
		m.dstNamed = true
		m.scan(doc.dstRules.of(dstName))
		for _, p := range dstP {
			m.scan(doc.dstRules.of(p))
		}
		if self {
			m.scan(doc.selfRules)
		}
	}
	if m.best == int32(len(doc.rules)) {
		return -1
	}
	return m.best
}

// matcher is one match in progress: the first matching rule found so far
// (best; len(rules) when none).
type matcher struct {
	doc         *Document
	s, d        *node
	self, reach bool // s and d have one owner; an accept or check rule may let s into d
	// The lists scanned are of rules whose src names s (srcNamed), or
	// whose dst names d (dstNamed): that side needs no check.
	srcNamed, dstNamed bool
	user               login
	validUser          bool // validUser(user.name)
	now                clock
	best               int32
}

// scan lowers best to the first rule in the ascending list, before best,
// that covers s and d and admits the login at now. Unless reach, only a
// reject rule may match.
func (m *matcher) scan(list []int32) {
	doc := m.doc
	for _, ri := range list {
		if ri >= m.best {
			return
		}
		h := &doc.hot[ri]
		if (m.reach || h.action == Reject) && h.inForce(m.now) &&
			(m.srcNamed || names(doc.hotPrincipals[h.srcOff:h.srcOff+h.srcLen], m.s, m.s.srcP)) &&
			(m.dstNamed || h.self && m.self || names(doc.hotPrincipals[h.dstOff:h.dstOff+h.dstLen], m.d, m.d.dstP)) &&
			m.admits(h, ri) {
			m.best = ri
			return
		}
	}
}

// admits reports whether rule ri, whose hot record is h, lets the login
// in: users.match, answered from h's summary of the users where it can be.
func (m *matcher) admits(h *ruleHot, ri int32) bool {
	reject := h.action == Reject
	switch {
	case reject && h.users&usersAny != 0:
		return true
	case !m.validUser:
		return false
	case h.users&usersNames != 0:
		// A listed name decides before anything else: read the rule.
	case m.user.root:
		return false
	case h.users&(usersAny|usersNonroot) != 0:
		return true
	case h.users&usersByOwner == 0 || m.s.localpart() == "":
		return false
	}
	return m.doc.rules[ri].users.match(m.user, m.s.localpart(), reject)
}

// reaches reports whether an accept or check rule may let s into d at all:
// d is tagged or has s's owner. On the mesh the safety rule at load makes
// this hold for every pair a rule covers; on a tailnet, where the nodes are
// not known at load, it is also where that rule is kept.
func reaches(s, d *node) bool {
	return len(d.id.Tags) > 0 || s.id.Owner != "" && s.id.Owner == d.id.Owner
}
