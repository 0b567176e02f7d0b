package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tailscale/hujson"
)

// ruleKeys are the keys a rule may have.
var ruleKeys = []string{"action", "src", "dst", "users", "message", "checkPeriod", "checkProof", "expires",
	"sessionDuration", "acceptEnv", "agentForward", "localForward", "remoteForward", "record", "onRecordingFailure", "recorders"}

// rules reads "ssh".
func (c *compiler) rules(v *hujson.Value) {
	els, ok := c.array(v, "ssh")
	if !ok {
		return
	}
	for i := range els {
		c.rule(&els[i], index("ssh", i))
	}
}

// rule reads one entry of "ssh".
func (c *compiler) rule(v *hujson.Value, field string) {
	nerr := len(c.errs)
	ms, ok := c.object(v, field, ruleKeys...)
	if !ok {
		return
	}
	get := map[string]member{}
	for _, m := range ms {
		get[m.key] = m
	}
	r := rule{name: field}
	r.dec.RulePos, r.line = c.pos(v.StartOffset)
	r.dec.Rule = field
	r.dec.RuleID = ruleID(v)
	for _, k := range []string{"action", "src", "dst", "users"} {
		if _, ok := get[k]; !ok {
			c.errorf(v.StartOffset, field, "missing %q", k)
		}
	}
	if len(c.errs) > nerr {
		return
	}
	m := get["action"]
	badAction := false
	switch s, _ := c.str(m.val, join(field, "action")); s {
	case "accept":
		r.action = Accept
	case "check":
		r.action = Check
		r.dec.CheckPeriod = DefaultCheckPeriod
	case "reject":
		r.action = Reject
	default:
		if len(c.errs) == nerr {
			c.errorf(m.val.StartOffset, join(field, "action"), "%q is not accept, check or reject", s)
		}
		// Go on: src, dst and users may have problems of their own. The
		// options are not checked (which ones a rule may have depends on
		// its action), and the rule is not kept.
		badAction = true
	}
	r.dec.Action = r.action
	c.ruleSrc(&r, get["src"], join(field, "src"))
	c.ruleDst(&r, get["dst"], join(field, "dst"))
	if us, ok := c.strings(get["users"].val, join(field, "users")); ok {
		if len(us) == 0 {
			c.errorf(get["users"].val.StartOffset, join(field, "users"), "empty: the rule would match no one")
		}
		for _, u := range us {
			if err := r.users.add(u.s); err != nil {
				c.errorf(u.off, u.field, "%w", err)
			}
		}
	}
	for _, m := range ms {
		if badAction {
			break
		}
		c.ruleOption(&r, m, join(field, m.key))
	}
	if m, ok := get["recorders"]; ok && len(c.errs) == nerr && !r.dec.Record {
		// A rule that names recorders but does not record would let its
		// sessions run unrecorded, against what its author asked for.
		c.errorf(m.keyOff, join(field, "recorders"), `names recorders, but the rule does not record: add "record": true`)
	}
	if len(c.errs) > nerr {
		return
	}
	if r.action != Reject {
		if c.doc.tailnet {
			c.tailnetSafety(&r, get["dst"], join(field, "dst"))
		} else {
			c.safety(&r, get["dst"], join(field, "dst"))
		}
		if len(c.errs) > nerr {
			return
		}
	}
	c.doc.rules = append(c.doc.rules, r)
}

// ruleID is the digest of a rule's canonical JSON: its value with comments
// and trailing commas removed, decoded and encoded again (which sorts the
// keys and drops the spacing), SHA-256, the first 16 bytes in hex.
func ruleID(v *hujson.Value) string {
	std := v.Clone()
	std.Standardize()
	var x any
	if err := json.Unmarshal(std.Pack(), &x); err != nil {
		return "" // not reached: the compiler refuses such a rule
	}
	b, _ := json.Marshal(x)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// ruleSrc compiles "src".
func (c *compiler) ruleSrc(r *rule, m member, field string) {
	sels, ok := c.strings(m.val, field)
	if !ok {
		return
	}
	if len(sels) == 0 {
		c.errorf(m.val.StartOffset, field, "empty: the rule would match no one")
	}
	for _, s := range sels {
		sel := s.s
		switch {
		case sel == anyone, sel == autogroupMember, sel == autogroupTagged && c.doc.tailnet:
			r.srcP = append(r.srcP, c.principal(sel))
		case sel == self:
			c.errorf(s.off, s.field, "autogroup:self is only for dst")
			continue
		case strings.HasPrefix(sel, "autogroup:") && c.doc.tailnet:
			c.errorf(s.off, s.field, "unknown autogroup %q (src takes autogroup:member or autogroup:tagged)", sel)
			continue
		case strings.HasPrefix(sel, "autogroup:"):
			c.errorf(s.off, s.field, "unknown autogroup %q (src takes autogroup:member)", sel)
			continue
		case strings.HasPrefix(sel, "group:"):
			emails, ok := c.doc.groups[sel]
			if !ok {
				c.errorf(s.off, s.field, "undefined group %q", sel)
				continue
			}
			for _, e := range emails {
				r.srcP = append(r.srcP, c.principal(e))
			}
		case strings.HasPrefix(sel, "tag:"):
			if !c.tagOwners[sel] {
				c.errorf(s.off, s.field, "undefined tag %q", sel)
				continue
			}
			r.srcP = append(r.srcP, c.principal(sel))
		case strings.Contains(sel, "@"):
			sel = lower(sel)
			if !validEmail(sel) {
				c.errorf(s.off, s.field, "%q is not an email address", s.s)
				continue
			}
			if !c.owners[sel] && !c.doc.tailnet { // a tailnet's users are not known at load
				if !c.declaredOwners[sel] { // else its node's entry has an error, reported
					c.errorf(s.off, s.field, "no node is owned by %q", sel)
				}
				continue
			}
			r.srcP = append(r.srcP, c.principal(sel))
		case c.doc.tailnet:
			c.errorf(s.off, s.field, "%q is not a login (user@domain), group:, tag:, autogroup:member, autogroup:tagged or *: a tailnet document names no nodes", sel)
			continue
		default:
			if _, ok := c.doc.nodeIndex(sel); !ok {
				c.undefinedNode(s.off, s.field, sel, "")
				continue
			}
			r.srcP = append(r.srcP, c.principal(sel))
		}
		r.src = append(r.src, sel)
	}
	slices.Sort(r.srcP)
	r.srcP = slices.Compact(r.srcP)
}

// ruleDst compiles "dst".
func (c *compiler) ruleDst(r *rule, m member, field string) {
	sels, ok := c.strings(m.val, field)
	if !ok {
		return
	}
	if len(sels) == 0 {
		c.errorf(m.val.StartOffset, field, "empty: the rule would match nothing")
	}
	for _, s := range sels {
		sel := s.s
		switch {
		case sel == self:
			r.self = true
		case sel == anyone:
			r.dstP = append(r.dstP, c.principal(sel))
		case strings.HasPrefix(sel, "autogroup:"):
			c.errorf(s.off, s.field, "unknown autogroup %q (dst takes autogroup:self)", sel)
			continue
		case c.doc.tailnet && strings.HasPrefix(sel, "group:"):
			c.errorf(s.off, s.field, "dst names servers, not groups: use autogroup:self, a tag or a login (the servers that user owns) instead of %q", sel)
			continue
		case c.doc.tailnet && strings.Contains(sel, "@"):
			sel = lower(sel)
			if !validEmail(sel) {
				c.errorf(s.off, s.field, "%q is not an email address", s.s)
				continue
			}
			r.dstP = append(r.dstP, c.principal(sel))
		case strings.HasPrefix(sel, "group:"), strings.Contains(sel, "@"):
			c.errorf(s.off, s.field, "dst names nodes, not people: use autogroup:self, a tag or a node name instead of %q", sel)
			continue
		case strings.HasPrefix(sel, "tag:"):
			if !c.tagOwners[sel] {
				c.errorf(s.off, s.field, "undefined tag %q", sel)
				continue
			}
			r.dstP = append(r.dstP, c.principal(sel))
		case c.doc.tailnet:
			c.errorf(s.off, s.field, "%q is not tag:, a login (user@domain), autogroup:self or *: a tailnet document names no nodes", sel)
			continue
		default:
			if _, ok := c.doc.nodeIndex(sel); !ok {
				c.undefinedNode(s.off, s.field, sel, "")
				continue
			}
			r.dstP = append(r.dstP, c.principal(sel))
		}
		r.dst = append(r.dst, sel)
	}
	slices.Sort(r.dstP)
	r.dstP = slices.Compact(r.dstP)
}

// safety refuses an accept or check rule that would let one person (or a
// tagged node) into another person's untagged node. For every (src, dst)
// pair the rule covers, apart from autogroup:self, dst must be tagged or
// have the caller's owner: that holds exactly when the sources and the
// untagged destinations all belong to one and the same person.
func (c *compiler) safety(r *rule, m member, field string) {
	ns := c.doc.nodeSet
	var src, dst ownerSummary
	for _, p := range r.srcP {
		src.merge(ns, ns.srcSummary(p))
	}
	for _, p := range r.dstP {
		dst.merge(ns, ns.dstSummary(p))
	}
	if src.n == 0 || dst.n == 0 {
		return
	}
	owner := func(i int32) string { return ns.classOf(i).owner }
	if src.n == 1 && dst.n == 1 && owner(src.ex[0]) == owner(dst.ex[0]) {
		return
	}
	// Name one offending pair.
	s, d := src.ex[0], dst.ex[0]
	if owner(s) == owner(d) {
		if src.n == 2 {
			s = src.ex[1]
		} else {
			d = dst.ex[1]
		}
	}
	who := owner(s)
	if who == "" {
		who = strings.Join(ns.classOf(s).tags, ", ")
	}
	c.errorf(m.val.StartOffset, field,
		"%s rule would let %s (%s) into %s, an untagged node of %s; accept and check rules may reach only tagged nodes and the caller's own (autogroup:self)",
		r.action, ns.name(s), who, ns.name(d), owner(d))
}

// tailnetSafety is the safety rule for a tailnet document, whose nodes are
// not known at load: an accept or check rule may name in dst only tags,
// autogroup:self, and a login whose src is that same person alone (the
// login itself, or groups of that login only). dst * would reach every
// person's untagged devices, and a login reached from anyone else would be
// one person let into another's; both are refused. At evaluation, an
// untagged server is reached only by its owner (see reaches).
func (c *compiler) tailnetSafety(r *rule, m member, field string) {
	for _, d := range r.dst {
		switch {
		case d == anyone:
			c.errorf(m.val.StartOffset, field,
				"%s rule with dst * would let %s into every person's untagged nodes; on a tailnet, accept and check rules may reach only tags, autogroup:self, or a login from that login alone",
				r.action, strings.Join(r.src, ", "))
			return
		case strings.Contains(d, "@"):
			for _, src := range r.src {
				if src == d {
					continue
				}
				if g, ok := c.doc.groups[src]; ok && !slices.ContainsFunc(g, func(e string) bool { return e != d }) {
					continue
				}
				c.errorf(m.val.StartOffset, field,
					"%s rule would let %s into %s, the untagged nodes of %s; accept and check rules may reach only tagged nodes and the caller's own (autogroup:self, or a login from that login alone)",
					r.action, src, d, d)
				return
			}
		}
	}
}

// ruleOption compiles the optional keys of a rule.
func (c *compiler) ruleOption(r *rule, m member, field string) {
	allowOnly := func(actions ...Action) bool {
		if !slices.Contains(actions, r.action) {
			names := make([]string, len(actions))
			for i, a := range actions {
				names[i] = a.String()
			}
			c.errorf(m.keyOff, field, "only for %s rules, not %s", strings.Join(names, " and "), r.action)
			return false
		}
		return true
	}
	d := &r.dec
	switch m.key {
	case "message":
		if s, ok := c.str(m.val, field); ok {
			if strings.ContainsFunc(s, func(r rune) bool { return r < ' ' && r != '\n' && r != '\t' || r == 0x7f }) {
				c.errorf(m.val.StartOffset, field, "control characters are not allowed in a message")
			}
			d.Message = s
		}
	case "checkPeriod":
		if allowOnly(Check) {
			d.CheckPeriod = c.duration(m, field)
		}
	case "checkProof":
		if allowOnly(Check) {
			if s, ok := c.str(m.val, field); ok {
				switch s {
				case CheckProofPasskey, CheckProofMesh, CheckProofOIDC:
					d.CheckProof = s
				default:
					c.errorf(m.val.StartOffset, field, "%q is not passkey, oidc or mesh", s)
				}
			}
		}
	case "sessionDuration":
		if allowOnly(Accept, Check) {
			d.SessionDuration = c.duration(m, field)
		}
	case "expires":
		if s, ok := c.str(m.val, field); ok {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				c.errorf(m.val.StartOffset, field, "%q is not an RFC 3339 time like \"2027-01-01T00:00:00Z\"", s)
			}
			r.expires, d.Expires = t, t
		}
	case "acceptEnv":
		if !allowOnly(Accept, Check) {
			return
		}
		if pats, ok := c.strings(m.val, field); ok {
			d.AcceptEnv = []string{}
			for _, p := range pats {
				if err := checkEnvPattern(p.s); err != nil {
					c.errorf(p.off, p.field, "%w", err)
				}
				d.AcceptEnv = append(d.AcceptEnv, p.s)
			}
		}
	case "localForward", "remoteForward":
		if !allowOnly(Accept, Check) {
			return
		}
		if pats, ok := c.strings(m.val, field); ok {
			list := make([]string, 0, len(pats))
			for _, p := range pats {
				if err := checkForwardPattern(p.s); err != nil {
					c.errorf(p.off, p.field, "%w", err)
				}
				list = append(list, p.s)
			}
			if m.key == "localForward" {
				d.LocalForward = list
			} else {
				d.RemoteForward = list
			}
		}
	case "agentForward":
		if allowOnly(Accept, Check) {
			d.AgentForward, _ = c.boolean(m.val, field)
		}
	case "record":
		if allowOnly(Accept, Check) {
			d.Record, _ = c.boolean(m.val, field)
		}
	case "recorders":
		if !allowOnly(Accept, Check) {
			return
		}
		if names, ok := c.strings(m.val, field); ok {
			if len(names) == 0 {
				// An empty list would record on the host itself, which is
				// what "recorders" is there to avoid: say so.
				c.errorf(m.val.StartOffset, field, `names no recorder: list recorders, or leave "recorders" out to record on the server`)
				return
			}
			d.Recorders = []string{}
			for _, n := range names {
				switch {
				case strings.HasPrefix(n.s, "tag:"):
					if !c.tagOwners[n.s] {
						c.errorf(n.off, n.field, "%q is not declared in tagOwners", n.s)
					}
				case !c.isDeclared(n.s):
					c.errorf(n.off, n.field, "%q is not a node name or tag:NAME", n.s)
				}
				d.Recorders = append(d.Recorders, n.s)
			}
		}
	case "onRecordingFailure":
		if !allowOnly(Accept, Check) {
			return
		}
		if s, ok := c.str(m.val, field); ok {
			if s != "fail-open" && s != "fail-closed" {
				c.errorf(m.val.StartOffset, field, "%q is not fail-open or fail-closed", s)
			}
			d.OnRecordingFailure = s
		}
	}
}

// duration parses a positive Go duration such as "12h" or "90m".
func (c *compiler) duration(m member, field string) time.Duration {
	s, ok := c.str(m.val, field)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		c.errorf(m.val.StartOffset, field, "%q is not a positive duration like \"12h\" or \"90m\"", s)
		return 0
	}
	return d
}

// tests reads "tests".
func (c *compiler) tests(v *hujson.Value) {
	els, ok := c.array(v, "tests")
	if !ok {
		return
	}
	for i := range els {
		field := index("tests", i)
		ms, ok := c.object(&els[i], field, "src", "dst", "accept", "check", "deny", "at")
		if !ok {
			continue
		}
		t := test{field: field}
		var haveSrc, haveDst bool
		for _, m := range ms {
			f := join(field, m.key)
			switch m.key {
			case "src", "dst":
				s, ok := c.str(m.val, f)
				if !ok {
					continue
				}
				var n node
				if c.doc.tailnet {
					id, err := parseTailnetIdentity(s)
					if err == nil {
						err = c.checkTags(id.Tags)
					}
					if err != nil {
						c.errorf(m.val.StartOffset, f, "%w (tests in a tailnet document name a login or tags)", err)
						continue
					}
					if m.key == "src" {
						n = c.doc.tailnetCaller(&id, nil)
					} else {
						n = c.doc.tailnetServer(&id, nil)
					}
				} else {
					i, ok := c.doc.nodeIndex(s)
					if !ok {
						c.undefinedNode(m.val.StartOffset, f, s, " (tests name nodes)")
						continue
					}
					n = c.doc.nodeSet.node(i)
				}
				if m.key == "src" {
					t.src, t.srcName, haveSrc = n, s, true
				} else {
					t.dst, t.dstName, haveDst = n, s, true
				}
			case "at":
				s, ok := c.str(m.val, f)
				if !ok {
					continue
				}
				at, err := time.Parse(time.RFC3339, s)
				if err != nil {
					c.errorf(m.val.StartOffset, f, "%q is not an RFC 3339 time like \"2027-01-01T00:00:00Z\"", s)
				}
				t.at = at
			default:
				want := map[string]Action{"accept": Accept, "check": Check, "deny": Reject}[m.key]
				us, ok := c.strings(m.val, f)
				if !ok {
					continue
				}
				for _, u := range us {
					t.want = append(t.want, testCase{u.s, want, c.fileOff(u.off)}) // runTests reports at the file's offset
				}
			}
		}
		for _, k := range []string{"src", "dst"} {
			if !slices.ContainsFunc(ms, func(m member) bool { return m.key == k }) {
				c.errorf(els[i].StartOffset, field, "missing %q", k)
			}
		}
		if len(t.want) == 0 {
			c.errorf(els[i].StartOffset, field, "a test needs users in accept, check or deny")
		}
		if haveSrc && haveDst {
			slices.SortStableFunc(t.want, func(a, b testCase) int { return cmp.Compare(a.off, b.off) })
			c.doc.tests = append(c.doc.tests, t)
		}
	}
}

// checkTags returns an error for the first tag the document does not
// declare in tagOwners.
func (c *compiler) checkTags(tags []string) error {
	for _, t := range tags {
		if !c.tagOwners[t] {
			return fmt.Errorf("undefined tag %q", t)
		}
	}
	return nil
}

// parseTailnetIdentity reads how tests and Explain name a tailnet node: a
// login (an untagged node of that user; case is ignored) or one or more
// tags separated by commas ("tag:ci" or "tag:ci,tag:x", a tagged node).
func parseTailnetIdentity(s string) (Identity, error) {
	if strings.HasPrefix(s, "tag:") {
		var id Identity
		for _, t := range strings.Split(s, ",") {
			t = strings.TrimSpace(t)
			switch {
			case !strings.HasPrefix(t, "tag:") || !validName(t[4:]):
				return Identity{}, fmt.Errorf("%q is not a tag (tag:NAME)", t)
			case slices.Contains(id.Tags, t):
				return Identity{}, fmt.Errorf("duplicate tag %q", t)
			}
			id.Tags = append(id.Tags, t)
		}
		return id, nil
	}
	if !validEmail(s) {
		return Identity{}, fmt.Errorf("%q is not a login (user@domain) or tags (tag:a or tag:a,tag:b)", s)
	}
	return Identity{Owner: lower(s)}, nil
}

// undefinedNode reports a reference to a node the document does not
// define, unless its entry is there with an error (reported already).
func (c *compiler) undefinedNode(off int, field, name, note string) {
	if c.isDeclared(name) {
		return
	}
	c.errorf(off, field, "undefined node %q%s", name, note)
}
