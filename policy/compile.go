package policy

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/tailscale/hujson"
)

// Principals: the names a selector can use for a node. A node's src
// principals are its name, its owner, autogroup:member (if owned), its tags
// and *; its dst principals are its name, its tags and *. A group is
// expanded to its members' emails. The syntaxes do not overlap (node names
// have no ':' or '@'), so the strings themselves are the keys.
const (
	anyone          = "*"
	autogroupMember = "autogroup:member"
	self            = "autogroup:self"
)

// compiler turns the HuJSON tree into a Document.
type compiler struct {
	decoder
	doc        *Document
	principals map[string]int32
	owners     map[string]bool           // emails that own a node
	tagOwners  map[string]bool           // declared tags
	rawGroups  map[string][]strAt        // as written
	groupOff   map[string]int            // where each group is defined
	srcSum     []ownerSummary            // by principal: owners of the nodes it covers as src
	dstSum     []ownerSummary            // by principal: owners of the untagged nodes it covers as dst
	groupState map[string]int            // 1 expanding, 2 done
	nodeOff    map[meshkey.Public]string // key → node name, for duplicates
}

func newCompiler(file string, data []byte) *compiler {
	return &compiler{
		decoder:    decoder{file: file, lines: newLines(data)},
		doc:        &Document{file: file, byKey: map[meshkey.Public]int32{}, byName: map[string]int32{}, groups: map[string][]string{}},
		principals: map[string]int32{},
		owners:     map[string]bool{},
		tagOwners:  map[string]bool{},
		rawGroups:  map[string][]strAt{},
		groupOff:   map[string]int{},
		groupState: map[string]int{},
		nodeOff:    map[meshkey.Public]string{},
	}
}

// principal returns the id of name, creating it.
func (c *compiler) principal(name string) int32 {
	if id, ok := c.principals[name]; ok {
		return id
	}
	id := int32(len(c.principals))
	c.principals[name] = id
	c.doc.srcRules = append(c.doc.srcRules, nil)
	c.doc.dstRules = append(c.doc.dstRules, nil)
	c.srcSum = append(c.srcSum, ownerSummary{})
	c.dstSum = append(c.dstSum, ownerSummary{})
	return id
}

// document compiles the whole tree. Parts are compiled in dependency order
// (tags, nodes, groups, rules, tests) whatever their order in the file.
func (c *compiler) document(v *hujson.Value) {
	ms, ok := c.object(v, "", "nodes", "groups", "tagOwners", "ssh", "tests")
	if !ok {
		return
	}
	top := map[string]member{}
	for _, m := range ms {
		top[m.key] = m
	}
	if m, ok := top["tagOwners"]; ok {
		c.declareTags(m.val)
	}
	if m, ok := top["nodes"]; ok {
		c.nodes(m.val)
	} else {
		c.errorf(v.StartOffset, "", "missing \"nodes\"")
	}
	if m, ok := top["groups"]; ok {
		c.groups(m.val)
	}
	if m, ok := top["tagOwners"]; ok {
		c.checkTagOwners(m.val)
	}
	if len(c.errs) > 0 {
		return // rules would only repeat the same problems
	}
	c.summarize()
	if m, ok := top["ssh"]; ok {
		c.rules(m.val)
	}
	if m, ok := top["tests"]; ok {
		c.tests(m.val)
	}
}

func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '.' || c == '_' || c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func validEmail(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") || len(s) > 254 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(`"(),:;<>[\]*{}`, r) {
			return false
		}
	}
	return true
}

// declareTags reads the keys of tagOwners: the tags the document may use.
func (c *compiler) declareTags(v *hujson.Value) {
	ms, ok := c.object(v, "tagOwners")
	if !ok {
		return
	}
	for _, m := range ms {
		if !strings.HasPrefix(m.key, "tag:") || !validName(m.key[4:]) {
			c.errorf(m.keyOff, join("tagOwners", m.key), "a tag is tag:NAME (letters, digits, . _ -)")
			continue
		}
		c.tagOwners[m.key] = true
	}
}

// checkTagOwners checks the values of tagOwners: emails, groups or tags.
func (c *compiler) checkTagOwners(v *hujson.Value) {
	ms, _ := c.object(v, "tagOwners")
	for _, m := range ms {
		owners, ok := c.strings(m.val, join("tagOwners", m.key))
		if !ok {
			continue
		}
		for _, o := range owners {
			switch {
			case strings.HasPrefix(o.s, "group:"):
				if _, ok := c.rawGroups[o.s]; !ok {
					c.errorf(o.off, o.field, "undefined group %q", o.s)
				}
			case strings.HasPrefix(o.s, "tag:"):
				if !c.tagOwners[o.s] {
					c.errorf(o.off, o.field, "undefined tag %q", o.s)
				}
			case !validEmail(o.s):
				c.errorf(o.off, o.field, "%q is not an email, group: or tag:", o.s)
			}
		}
	}
}

// nodes reads "nodes".
func (c *compiler) nodes(v *hujson.Value) {
	ms, ok := c.object(v, "nodes")
	if !ok {
		return
	}
	for _, m := range ms {
		field := join("nodes", m.key)
		if !validName(m.key) {
			c.errorf(m.keyOff, field, "a node name is letters, digits, . _ - (no : or @)")
			continue
		}
		fs, ok := c.object(m.val, field, "key", "owner", "tags")
		if !ok {
			continue
		}
		n := node{id: Identity{Node: m.key}, off: m.val.StartOffset}
		var haveKey, bad bool
		for _, f := range fs {
			ff := join(field, f.key)
			switch f.key {
			case "key":
				s, ok := c.str(f.val, ff)
				if !ok {
					bad = true
					continue
				}
				k, err := meshkey.ParsePublic(s)
				switch {
				case err != nil:
					c.errorf(f.val.StartOffset, ff, "%w", err)
					bad = true
					continue
				case k.IsZero():
					c.errorf(f.val.StartOffset, ff, "the all-zero key is not a key")
					bad = true
					continue
				}
				if other, dup := c.nodeOff[k]; dup {
					c.errorf(f.val.StartOffset, ff, "duplicate key: node %q has the same key", other)
					bad = true
					continue
				}
				c.nodeOff[k] = m.key
				n.id.Key, haveKey = k, true
			case "owner":
				s, ok := c.str(f.val, ff)
				if !ok {
					bad = true
					continue
				}
				if !validEmail(s) {
					c.errorf(f.val.StartOffset, ff, "%q is not an email address", s)
					bad = true
					continue
				}
				n.id.Owner = strings.ToLower(s)
				n.localpart, _, _ = strings.Cut(n.id.Owner, "@")
			case "tags":
				tags, ok := c.strings(f.val, ff)
				if !ok {
					bad = true
					continue
				}
				for _, t := range tags {
					switch {
					case !strings.HasPrefix(t.s, "tag:"):
						c.errorf(t.off, t.field, "%q is not a tag (tag:NAME)", t.s)
						bad = true
					case !c.tagOwners[t.s]:
						c.errorf(t.off, t.field, "undefined tag %q (declare it in tagOwners)", t.s)
						bad = true
					case slices.Contains(n.id.Tags, t.s):
						c.errorf(t.off, t.field, "duplicate tag %q", t.s)
						bad = true
					default:
						n.id.Tags = append(n.id.Tags, t.s)
					}
				}
			}
		}
		switch {
		case bad:
			continue
		case !haveKey:
			c.errorf(m.val.StartOffset, field, "missing \"key\"")
			continue
		case n.id.Owner != "" && len(n.id.Tags) > 0:
			c.errorf(m.val.StartOffset, field, "a node has an owner or tags, not both (a tagged node belongs to no person)")
			continue
		case n.id.Owner == "" && len(n.id.Tags) == 0:
			c.errorf(m.val.StartOffset, field, "a node needs an owner or tags")
			continue
		}
		i := int32(len(c.doc.nodes))
		c.doc.byKey[n.id.Key] = i
		c.doc.byName[m.key] = i
		if n.id.Owner != "" {
			c.owners[n.id.Owner] = true
		}
		c.doc.nodes = append(c.doc.nodes, n)
	}
	for i := range c.doc.nodes {
		n := &c.doc.nodes[i]
		n.srcP = append(n.srcP, c.principal(n.id.Node), c.principal(anyone))
		n.dstP = append(n.dstP, c.principal(n.id.Node), c.principal(anyone))
		if n.id.Owner != "" {
			n.srcP = append(n.srcP, c.principal(n.id.Owner), c.principal(autogroupMember))
		}
		for _, t := range n.id.Tags {
			n.srcP = append(n.srcP, c.principal(t))
			n.dstP = append(n.dstP, c.principal(t))
		}
		slices.Sort(n.srcP)
		slices.Sort(n.dstP)
	}
}

// groups reads "groups" and expands each group to its emails.
func (c *compiler) groups(v *hujson.Value) {
	ms, ok := c.object(v, "groups")
	if !ok {
		return
	}
	for _, m := range ms {
		field := join("groups", m.key)
		if !strings.HasPrefix(m.key, "group:") || !validName(m.key[6:]) {
			c.errorf(m.keyOff, field, "a group is group:NAME (letters, digits, . _ -)")
			continue
		}
		list, ok := c.strings(m.val, field)
		if !ok {
			continue
		}
		c.rawGroups[m.key] = list
		c.groupOff[m.key] = m.keyOff
	}
	for _, m := range ms { // file order, so errors come out in order
		if _, ok := c.rawGroups[m.key]; ok {
			c.expand(m.key, nil)
		}
	}
}

// expand flattens group g into c.doc.groups, reporting undefined members
// and cycles. path is the chain of groups being expanded.
func (c *compiler) expand(g string, path []string) []string {
	switch c.groupState[g] {
	case 2:
		return c.doc.groups[g]
	case 1:
		return nil // the cycle is reported by the caller
	}
	c.groupState[g] = 1
	path = append(path, g)
	var emails []string
	for _, m := range c.rawGroups[g] {
		switch {
		case strings.HasPrefix(m.s, "group:"):
			if _, ok := c.rawGroups[m.s]; !ok {
				c.errorf(m.off, m.field, "undefined group %q", m.s)
				continue
			}
			if c.groupState[m.s] == 1 {
				i := slices.Index(path, m.s)
				c.errorf(m.off, m.field, "group cycle: %s → %s", strings.Join(path[i:], " → "), m.s)
				continue
			}
			emails = append(emails, c.expand(m.s, path)...)
		case validEmail(m.s):
			emails = append(emails, strings.ToLower(m.s))
		default:
			c.errorf(m.off, m.field, "%q is not an email or group: (groups hold people)", m.s)
		}
	}
	slices.Sort(emails)
	emails = slices.Compact(emails)
	c.doc.groups[g] = emails
	c.groupState[g] = 2
	return emails
}

// ownerSummary keeps up to two nodes with different owners ("" for tagged
// nodes counts as an owner of its own): enough to tell whether a set of
// nodes belongs to one person, and to name two that do not.
type ownerSummary struct {
	n  int
	ex [2]int32
}

func (s *ownerSummary) add(nodes []node, i int32) {
	switch {
	case s.n == 0:
		s.ex[0], s.n = i, 1
	case s.n == 1 && nodes[s.ex[0]].id.Owner != nodes[i].id.Owner:
		s.ex[1], s.n = i, 2
	}
}

func (s *ownerSummary) merge(nodes []node, o ownerSummary) {
	for _, i := range o.ex[:o.n] {
		s.add(nodes, i)
	}
}

// summarize computes, for each principal, the owners of the nodes it
// covers as a source and of the untagged nodes it covers as a destination.
func (c *compiler) summarize() {
	nodes := c.doc.nodes
	for i := range nodes {
		for _, p := range nodes[i].srcP {
			c.srcSum[p].add(nodes, int32(i))
		}
		if len(nodes[i].id.Tags) == 0 {
			for _, p := range nodes[i].dstP {
				c.dstSum[p].add(nodes, int32(i))
			}
		}
	}
}

// ruleKeys are the keys a rule may have.
var ruleKeys = []string{"action", "src", "dst", "users", "message", "checkPeriod", "expires",
	"sessionDuration", "acceptEnv", "agentForward", "localForward", "remoteForward", "record", "onRecordingFailure"}

// rules reads "ssh".
func (c *compiler) rules(v *hujson.Value) {
	els, ok := c.array(v, "ssh")
	if !ok {
		return
	}
	for i := range els {
		c.rule(&els[i], index("ssh", i))
	}
	for ri, r := range c.doc.rules {
		for _, p := range r.srcP {
			c.doc.srcRules[p] = append(c.doc.srcRules[p], int32(ri))
		}
		for _, p := range r.dstP {
			c.doc.dstRules[p] = append(c.doc.dstRules[p], int32(ri))
		}
		if r.self {
			c.doc.selfRules = append(c.doc.selfRules, int32(ri))
		}
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
	for _, k := range []string{"action", "src", "dst", "users"} {
		if _, ok := get[k]; !ok {
			c.errorf(v.StartOffset, field, "missing %q", k)
		}
	}
	if len(c.errs) > nerr {
		return
	}
	m := get["action"]
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
		return
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
		c.ruleOption(&r, m, join(field, m.key))
	}
	if len(c.errs) > nerr {
		return
	}
	if r.action != Reject {
		c.safety(&r, get["dst"], join(field, "dst"))
		if len(c.errs) > nerr {
			return
		}
	}
	c.doc.rules = append(c.doc.rules, r)
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
		case sel == anyone, sel == autogroupMember:
			r.srcP = append(r.srcP, c.principal(sel))
		case sel == self:
			c.errorf(s.off, s.field, "autogroup:self is only for dst")
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
			sel = strings.ToLower(sel)
			if !validEmail(sel) {
				c.errorf(s.off, s.field, "%q is not an email address", s.s)
				continue
			}
			if !c.owners[sel] {
				c.errorf(s.off, s.field, "no node is owned by %q", sel)
				continue
			}
			r.srcP = append(r.srcP, c.principal(sel))
		default:
			if _, ok := c.doc.byName[sel]; !ok {
				c.errorf(s.off, s.field, "undefined node %q", sel)
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
		case strings.HasPrefix(sel, "group:"), strings.Contains(sel, "@"):
			c.errorf(s.off, s.field, "dst names nodes, not people: use autogroup:self, a tag or a node name instead of %q", sel)
			continue
		case strings.HasPrefix(sel, "tag:"):
			if !c.tagOwners[sel] {
				c.errorf(s.off, s.field, "undefined tag %q", sel)
				continue
			}
			r.dstP = append(r.dstP, c.principal(sel))
		default:
			if _, ok := c.doc.byName[sel]; !ok {
				c.errorf(s.off, s.field, "undefined node %q", sel)
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
	nodes := c.doc.nodes
	var src, dst ownerSummary
	for _, p := range r.srcP {
		src.merge(nodes, c.srcSum[p])
	}
	for _, p := range r.dstP {
		dst.merge(nodes, c.dstSum[p])
	}
	if src.n == 0 || dst.n == 0 {
		return
	}
	if src.n == 1 && dst.n == 1 && nodes[src.ex[0]].id.Owner == nodes[dst.ex[0]].id.Owner {
		return
	}
	// Name one offending pair.
	s, d := src.ex[0], dst.ex[0]
	if nodes[s].id.Owner == nodes[d].id.Owner {
		if src.n == 2 {
			s = src.ex[1]
		} else {
			d = dst.ex[1]
		}
	}
	who := nodes[s].id.Owner
	if who == "" {
		who = strings.Join(nodes[s].id.Tags, ", ")
	}
	c.errorf(m.val.StartOffset, field,
		"%s rule would let %s (%s) into %s, an untagged node of %s; accept and check rules may reach only tagged nodes and the caller's own (autogroup:self)",
		r.action, nodes[s].id.Node, who, nodes[d].id.Node, nodes[d].id.Owner)
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
		t := test{field: field, src: -1, dst: -1}
		for _, m := range ms {
			f := join(field, m.key)
			switch m.key {
			case "src", "dst":
				s, ok := c.str(m.val, f)
				if !ok {
					continue
				}
				n, ok := c.doc.byName[s]
				if !ok {
					c.errorf(m.val.StartOffset, f, "undefined node %q (tests name nodes)", s)
					continue
				}
				if m.key == "src" {
					t.src = n
				} else {
					t.dst = n
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
					t.want = append(t.want, testCase{u.s, want, u.off})
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
		if t.src >= 0 && t.dst >= 0 {
			slices.SortStableFunc(t.want, func(a, b testCase) int { return cmp.Compare(a.off, b.off) })
			c.doc.tests = append(c.doc.tests, t)
		}
	}
}
