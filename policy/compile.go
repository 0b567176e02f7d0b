package policy

import (
	"slices"
	"strings"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/tailscale/hujson"
)

// Principals: the names a selector can use for a node. A node's src
// principals are its name, its owner, autogroup:member (if owned), its tags
// and *; its dst principals are its name, its tags and *. On a tailnet a
// caller's are *, its tags and autogroup:tagged, or its owner and
// autogroup:member; a server's are *, its tags, or its owner (see
// Document.tailnetCaller). A group is expanded to its members' emails. The
// syntaxes do not overlap (node names have no ':' or '@'), so the strings
// themselves are the keys.
const (
	anyone          = "*"
	autogroupMember = "autogroup:member"
	autogroupTagged = "autogroup:tagged"
	self            = "autogroup:self"
)

// The values of the top-level "identity" key.
const (
	identityMesh    = "mesh"
	identityTailnet = "tailnet"
)

// compiler turns the HuJSON tree into a Document.
type compiler struct {
	decoder
	doc *Document
	// principals holds the ids of the names rules use beyond those of the
	// nodes (doc.nodeSet's, shared with the documents Reparse makes; node
	// i's name has id i): the emails of groups, tags no node has.
	principals map[string]int32
	// reuse, in a Reparse, is the previous document's nodes, whose "nodes"
	// value had the same bytes; needFull says that they cannot be used
	// after all (see adoptNodes) and Reparse must parse the whole.
	reuse      *nodeSet
	needFull   bool
	building   *nodeBuilder              // the nodes while compiler.nodes reads them
	owners     map[string]bool           // emails that own a node
	tagOwners  map[string]bool           // declared tags
	rawGroups  map[string][]strAt        // as written
	groupOff   map[string]int            // where each group is defined
	groupState map[string]int            // 1 expanding, 2 done
	nodeOff    map[meshkey.Public]string // key → node name of the entries left out with an error, for duplicates (see keyOwner)
	// declared holds the names under "nodes" whose entry had an error
	// (the others are in doc.nodeIndex; see isDeclared), and declaredOwners
	// every owner the entries give: a rule naming a node (or the
	// owner of a node) whose entry had an error is not reported again as
	// naming an undefined one.
	declared       map[string]bool
	declaredOwners map[string]bool
	interned       map[string]string // see intern
}

// newCompiler returns a compiler of the file called file, whose lines
// start where l says.
func newCompiler(file string, l lines) *compiler {
	c := &compiler{
		decoder:        decoder{file: file, lines: l},
		doc:            &Document{file: file, groups: map[string][]string{}, userRules: map[string][]int32{}, principals: map[string]int32{}},
		declared:       map[string]bool{},
		declaredOwners: map[string]bool{},
		owners:         map[string]bool{},
		tagOwners:      map[string]bool{},
		rawGroups:      map[string][]strAt{},
		groupOff:       map[string]int{},
		groupState:     map[string]int{},
		nodeOff:        map[meshkey.Public]string{},
	}
	c.principals = c.doc.principals
	return c
}

// principal returns the id of name, creating it.
func (c *compiler) principal(name string) int32 {
	if id, ok := c.doc.nodeSet.principal(name); ok {
		return id
	}
	if id, ok := c.principals[name]; ok {
		return id
	}
	id := int32(c.doc.nodeSet.numPrincipals() + len(c.principals))
	c.principals[name] = id
	return id
}

// document compiles the whole tree. Parts are compiled in dependency order
// (identity, tags, nodes, groups, rules, tests) whatever their order in the
// file.
func (c *compiler) document(v *hujson.Value) {
	ms, ok := c.object(v, "", "identity", "nodes", "groups", "tagOwners", "ssh", "tests")
	if !ok {
		return
	}
	top := map[string]member{}
	for _, m := range ms {
		top[m.key] = m
	}
	if m, ok := top["identity"]; ok {
		switch s, ok := c.str(m.val, "identity"); {
		case !ok:
		case s == identityTailnet:
			c.doc.tailnet = true
		case s != identityMesh:
			c.errorf(m.val.StartOffset, "identity", "%q is not mesh (the document's own \"nodes\") or tailnet (identities from the tailnet's coordinator)", s)
		}
	}
	if m, ok := top["tagOwners"]; ok {
		c.declareTags(m.val)
	}
	m, haveNodes := top["nodes"]
	switch {
	case c.doc.tailnet && haveNodes:
		c.errorf(m.keyOff, "nodes", "a tailnet document has no \"nodes\": the tailnet's coordinator says who is who (name callers by login, group:, tag: or autogroup:)")
	case haveNodes && c.reuse != nil:
		if c.adoptNodes(m.val); c.needFull {
			return
		}
	case haveNodes:
		c.doc.nodesAt = [2]int{m.val.StartOffset, m.val.EndOffset}
		c.nodes(m.val)
	case !c.doc.tailnet:
		c.errorf(v.StartOffset, "", "missing \"nodes\"")
	}
	if !c.doc.tailnet && c.doc.nodeSet == nil { // "nodes" had an error
		c.useNodes(newNodeBuilder(0).finish())
	}
	if m, ok := top["groups"]; ok {
		c.groups(m.val)
	}
	if m, ok := top["tagOwners"]; ok {
		c.checkTagOwners(m.val)
	}
	// Go on after errors: every problem is reported in one pass. A node
	// whose entry had an error is left out, and naming it is not reported
	// again (see declared).
	if m, ok := top["ssh"]; ok {
		c.rules(m.val)
	}
	c.doc.indexRules()      // every principal is known now
	c.doc.fixedPrincipals() // before the tests, which evaluate
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
	// Sized once: growing 100,000 nodes step by step cost more than
	// filling them.
	c.building = newNodeBuilder(len(ms))
	// An entry left out with an error goes into declared (its name) and
	// nodeOff (its key), once the next one starts: the good ones are in
	// the builder, so 100,000 good nodes need no more maps.
	var last struct {
		started, haveKey bool
		name             string
		key              meshkey.Public
		count            int // c.building.count() when it started
	}
	settle := func() {
		if last.started && c.building.count() == last.count {
			c.declared[last.name] = true
			if last.haveKey {
				c.nodeOff[last.key] = last.name
			}
		}
	}
	for _, m := range ms {
		settle()
		last.started, last.haveKey, last.name, last.count = true, false, m.key, c.building.count()
		field := join("nodes", m.key)
		if !validName(m.key) {
			c.errorf(m.keyOff, field, "a node name is letters, digits, . _ - (no : or @)")
			continue
		}
		fs, ok := c.object(m.val, field, "key", "owner", "tags")
		if !ok {
			continue
		}
		var n Identity
		var haveKey, bad bool
		for _, f := range fs {
			ff := func() string { return join(field, f.key) } // for errors only
			switch f.key {
			case "key":
				s, ok := c.fastStr(f.val, ff)
				if !ok {
					bad = true
					continue
				}
				k, err := meshkey.ParsePublic(s)
				switch {
				case err != nil:
					c.errorf(f.val.StartOffset, ff(), "%w", err)
					bad = true
					continue
				case k.IsZero():
					c.errorf(f.val.StartOffset, ff(), "the all-zero key is not a key")
					bad = true
					continue
				}
				if other, dup := c.keyOwner(k); dup {
					c.errorf(f.val.StartOffset, ff(), "duplicate key: node %q has the same key", other)
					bad = true
					continue
				}
				last.key, last.haveKey = k, true
				n.Key, haveKey = k, true
			case "owner":
				s, ok := c.fastStr(f.val, ff)
				if !ok {
					bad = true
					continue
				}
				if !validEmail(s) {
					c.errorf(f.val.StartOffset, ff(), "%q is not an email address", s)
					bad = true
					continue
				}
				owner := c.intern(lower(s))
				c.declaredOwners[owner] = true
				n.Owner = owner
			case "tags":
				tags, ok := c.strings(f.val, ff())
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
					case slices.Contains(n.Tags, t.s):
						c.errorf(t.off, t.field, "duplicate tag %q", t.s)
						bad = true
					default:
						n.Tags = append(n.Tags, t.s)
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
		case n.Owner != "" && len(n.Tags) > 0:
			c.errorf(m.val.StartOffset, field, "a node has an owner or tags, not both (a tagged node belongs to no person)")
			continue
		case n.Owner == "" && len(n.Tags) == 0:
			c.errorf(m.val.StartOffset, field, "a node needs an owner or tags")
			continue
		}
		addNode(c.building, m.key, n.Key, n.Owner, n.Tags)
	}
	settle()
	ns := c.building.finish()
	c.building = nil
	if ns == nil { // not reached: c.object reports a name twice
		c.errorf(v.StartOffset, "nodes", "two nodes have one name")
		return
	}
	c.useNodes(ns)
}

// useNodes makes ns the document's nodes: the principals rules add come
// after theirs.
func (c *compiler) useNodes(ns *nodeSet) {
	c.doc.nodeSet, c.owners = ns, ns.owners
	c.principals = map[string]int32{}
	c.doc.principals = c.principals
}

// adoptNodes takes, in a Reparse, the nodes the previous document
// compiled from the same bytes, as nodes would compile them again: the
// same nodes, keys and principals (ids), whatever else changed. The
// nodes depend on nothing else in the file but the declared tags: if
// one of theirs is no longer declared, or v is not where Reparse put the
// stand-in for the nodes, c.needFull tells Reparse to parse the whole.
func (c *compiler) adoptNodes(v *hujson.Value) {
	ns := c.reuse
	if v.StartOffset != c.cut-2 || v.EndOffset != c.cut {
		c.needFull = true
		return
	}
	for _, t := range ns.tags {
		if !c.tagOwners[t] {
			c.needFull = true
			return
		}
	}
	c.useNodes(ns)
	c.declaredOwners = ns.owners
}

// keyOwner returns the name of the entry under "nodes" read so far that
// has key k.
func (c *compiler) keyOwner(k meshkey.Public) (string, bool) {
	if i, ok := c.building.findKey(k); ok {
		return c.building.name(i), true
	}
	name, ok := c.nodeOff[k]
	return name, ok
}

// isDeclared reports whether "nodes" has an entry named name, compiled
// or left out with an error.
func (c *compiler) isDeclared(name string) bool {
	_, ok := c.doc.nodeIndex(name)
	return ok || c.declared[name]
}

// intern returns the first copy of s it was given: 100,000 nodes of 1,000
// owners hold 1,000 strings.
func (c *compiler) intern(s string) string {
	if c.interned == nil {
		c.interned = map[string]string{}
	}
	if t, ok := c.interned[s]; ok {
		return t
	}
	c.interned[s] = s
	return s
}

// fastStr is decoder.str for a value that is nearly always a string: the
// field's name, for the error, is made only when it is not.
func (c *compiler) fastStr(v *hujson.Value, field func() string) (string, bool) {
	if lit, ok := v.Value.(hujson.Literal); ok && lit.Kind() == '"' {
		return unquote(lit), true
	}
	return c.str(v, field())
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
			emails = append(emails, lower(m.s))
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
