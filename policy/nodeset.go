// The nodes a mesh document compiles, with their principals and the owner
// summaries the safety rule reads: built once from the "nodes" value and
// shared, unchanged, by the documents Reparse makes from it.

package policy

import (
	"crypto/sha256"
	"slices"
	"strings"

	"github.com/sshmesh/sshmesh/meshkey"
)

// nodeSet is what a mesh document compiles from its "nodes": the nodes,
// their indexes by key and by name, and the principals they are named by.
// It never changes once compiled, so the documents [Document.Reparse]
// makes from a document share it.
//
// A node is a number, i, with its fields in flat arrays: no pointer,
// slice or string of its own (at 100,000 nodes, per-node records with an
// Identity and two principal slices took 152 bytes a node, besides a name
// allocated each and a map of names). What nodes share, their owner or
// tags and the principals those give, is kept once per class: nodes with
// the same owner and tags (as written) are of one class. Identities are
// built on demand (see identity).
type nodeSet struct {
	// sum is the SHA-256 of the bytes of the "nodes" value it was
	// compiled from.
	sum     [sha256.Size]byte
	recs    []nodeRec // node i's
	names   string    // the nodes' names, one after the other
	classes []nodeClass
	// longP holds the principals of the classes that have too many to
	// hold them inline (see nodeClass), and anyoneOnly the dst principals
	// of an owned node but its name: *.
	longP      [][]int32
	anyoneOnly []int32
	byKey      keyIndex
	// byName finds a node by name: node i's name is principal i.
	byName nameIndex
	// others maps the principals of the nodes other than their names (*,
	// owners, autogroup:member, tags) to their ids, which follow the
	// nodes' (see principals).
	others map[string]int32
	owners map[string]bool // the owners of the nodes
	tags   []string        // the tags of the nodes, sorted
	// By principal after the nodes' names (see srcSummary): the owners
	// of the nodes it covers as src, and of the untagged nodes it covers
	// as dst (for compiler.safety).
	srcSum, dstSum []ownerSummary
}

// nodeRec is what a node has of its own, in 40 bytes: what Evaluate reads
// of a node is in one or two lines of the cache.
type nodeRec struct {
	key   meshkey.Public
	class int32 // an index in nodeSet.classes
	// nameEnd is where the node's name ends in nodeSet.names (it starts
	// where the node before's ends).
	nameEnd uint32
}

// nodeClass is what the nodes with one owner and tags share, in 64
// bytes: one line of the cache (at 100,000 nodes of 40,000 owners the
// classes are not all in the cache, and Evaluate reads two).
type nodeClass struct {
	owner string   // "" for tagged nodes
	tags  []string // as written (capacity clipped: shared by every node of the class)
	// The sorted principals a src selector may name the nodes by besides
	// their names: *, the owner and autogroup:member, or * and the tags;
	// inline[:n], or nodeSet.longP[inline[0]] when n is longList. A dst
	// selector names a tagged node by the same, an owned one by * alone
	// (nodeSet.anyoneOnly).
	inline [5]int32
	n      uint8
}

// longList is nodeClass.n for principals that do not fit inline.
const longList = 255

// len is the number of nodes.
func (ns *nodeSet) len() int {
	if ns == nil {
		return 0
	}
	return len(ns.recs)
}

// name returns node i's name.
func (ns *nodeSet) name(i int32) string {
	start := uint32(0)
	if i > 0 {
		start = ns.recs[i-1].nameEnd
	}
	return ns.names[start:ns.recs[i].nameEnd]
}

// classOf returns node i's class.
func (ns *nodeSet) classOf(i int32) *nodeClass { return &ns.classes[ns.recs[i].class] }

// identity returns what the document says of node i. Its Tags are shared
// with the node set (and every node of its class).
func (ns *nodeSet) identity(i int32) Identity {
	c := ns.classOf(i)
	return Identity{Key: ns.recs[i].key, Node: ns.name(i), Owner: c.owner, Tags: c.tags}
}

// ownIdentity is identity with Tags of its own: what the exported
// accessors return, so that a caller changing them in place changes
// neither the document nor the other nodes of the class.
func (ns *nodeSet) ownIdentity(i int32) Identity {
	id := ns.identity(i)
	id.Tags = slices.Clone(id.Tags)
	return id
}

// node returns node i as match reads it.
func (ns *nodeSet) node(i int32) node {
	n := ns.unnamed(i)
	n.id.Node = ns.name(i)
	return n
}

// unnamed is node without its name in its id (its principal is there):
// all that match reads, which Evaluate gives it for the destination.
func (ns *nodeSet) unnamed(i int32) node {
	c := ns.classOf(i)
	src, dst := ns.principalsOf(c)
	return node{id: Identity{Key: ns.recs[i].key, Owner: c.owner, Tags: c.tags}, name: i, srcP: src, dstP: dst}
}

// principalsOf returns the sorted principals a src, and a dst, selector
// may name the nodes of class c by, but their names.
func (ns *nodeSet) principalsOf(c *nodeClass) (src, dst []int32) {
	src = c.inline[:min(c.n, uint8(len(c.inline)))]
	if c.n == longList {
		src = ns.longP[c.inline[0]]
	}
	if c.owner != "" {
		return src, ns.anyoneOnly
	}
	return src, src
}

// findKey returns the index of the node with key k.
func (ns *nodeSet) findKey(k meshkey.Public) (int32, bool) {
	if ns == nil {
		return -1, false
	}
	return ns.byKey.find(ns.recs, k)
}

// findName returns the index of the node called name.
func (ns *nodeSet) findName(name string) (int32, bool) {
	if ns == nil {
		return -1, false
	}
	return ns.byName.find(ns, name)
}

// principal returns the id of a principal of the nodes: a node's name
// (its index) or one of the others.
func (ns *nodeSet) principal(name string) (int32, bool) {
	if ns == nil {
		return -1, false
	}
	if p, ok := ns.others[name]; ok {
		return p, true
	}
	return ns.findName(name)
}

// numPrincipals is the number of the nodes' principals.
func (ns *nodeSet) numPrincipals() int {
	if ns == nil {
		return 0
	}
	return ns.len() + len(ns.others)
}

// nodeBuilder collects the nodes of a "nodes" value, in order, for
// a nodeSet; quickNodes and compiler.nodes both fill one.
type nodeBuilder struct {
	ns      *nodeSet
	names   []byte
	classOf map[string]int32 // by classKey
	key     []byte           // scratch for classKey
}

// newNodeBuilder returns a builder sized for about size nodes.
func newNodeBuilder(size int) *nodeBuilder {
	return &nodeBuilder{
		ns: &nodeSet{
			recs:   make([]nodeRec, 0, size),
			byKey:  newKeyIndex(size),
			owners: map[string]bool{},
		},
		names:   make([]byte, 0, 8*size),
		classOf: map[string]int32{},
	}
}

// findKey returns the index of the node added with key k.
func (b *nodeBuilder) findKey(k meshkey.Public) (int32, bool) {
	return b.ns.byKey.find(b.ns.recs, k)
}

// name returns the name of node i, one of those added.
func (b *nodeBuilder) name(i int32) string {
	start := uint32(0)
	if i > 0 {
		start = b.ns.recs[i-1].nameEnd
	}
	return string(b.names[start:b.ns.recs[i].nameEnd])
}

// count is the number of nodes added.
func (b *nodeBuilder) count() int { return len(b.ns.recs) }

// addNode adds a node called name with key (which no node added has), an
// owner (lower case) or tags. tags is not kept: the class's are a copy.
func addNode[S ~string | ~[]byte](b *nodeBuilder, name S, key meshkey.Public, owner string, tags []string) {
	ns := b.ns
	b.names = append(b.names, name...)
	ns.recs = append(ns.recs, nodeRec{key: key, nameEnd: uint32(len(b.names))})
	ns.byKey.add(ns.recs, int32(len(ns.recs)-1))
	// The class's key: the owner, then each tag, each ended by a 0 byte
	// (which neither holds).
	b.key = append(b.key[:0], owner...)
	b.key = append(b.key, 0)
	for _, t := range tags {
		b.key = append(append(b.key, t...), 0)
	}
	c, ok := b.classOf[string(b.key)]
	if !ok {
		c = int32(len(ns.classes))
		b.classOf[string(b.key)] = c
		nc := nodeClass{owner: owner}
		if owner != "" {
			ns.owners[owner] = true
		}
		if len(tags) > 0 {
			nc.tags = slices.Clip(slices.Clone(tags))
		}
		ns.classes = append(ns.classes, nc)
	}
	ns.recs[len(ns.recs)-1].class = c
}

// finish gives the nodes their principals (see principals) and returns
// them, or nil if two nodes have one name (which compiler.nodes reports
// before: only quickNodes leaves it to this).
func (b *nodeBuilder) finish() *nodeSet {
	ns := b.ns
	ns.names = string(b.names)
	ns.recs = slices.Clip(ns.recs)
	var ok bool
	if ns.byName, ok = newNameIndex(ns); !ok {
		return nil
	}
	ns.principals()
	ns.summarize()
	return ns
}

// principals gives the nodes' classes their principals: node i's name is
// id i, then *, owners, autogroup:member and tags in the order the nodes
// first name them.
func (ns *nodeSet) principals() {
	ns.others = map[string]int32{}
	id := func(name string) int32 {
		if p, ok := ns.others[name]; ok {
			return p
		}
		p := int32(ns.len() + len(ns.others))
		ns.others[name] = p
		if strings.HasPrefix(name, "tag:") {
			ns.tags = append(ns.tags, name)
		}
		return p
	}
	// Classes are numbered in the order their first nodes come.
	var p []int32
	for i := range ns.classes {
		c := &ns.classes[i]
		p = append(p[:0], id(anyone))
		if c.owner != "" {
			p = append(p, id(c.owner), id(autogroupMember))
		}
		for _, t := range c.tags {
			p = append(p, id(t))
		}
		slices.Sort(p)
		if len(p) <= len(c.inline) {
			c.n = uint8(copy(c.inline[:], p))
		} else {
			c.n, c.inline[0] = longList, int32(len(ns.longP))
			ns.longP = append(ns.longP, slices.Clone(p))
		}
	}
	if len(ns.classes) > 0 {
		ns.anyoneOnly = []int32{id(anyone)}
	}
	slices.Sort(ns.tags)
}

// ownerSummary keeps up to two nodes with different owners ("" for tagged
// nodes counts as an owner of its own): enough to tell whether a set of
// nodes belongs to one person, and to name two that do not.
type ownerSummary struct {
	n  int
	ex [2]int32
}

func (s *ownerSummary) add(ns *nodeSet, i int32) {
	switch {
	case s.n == 0:
		s.ex[0], s.n = i, 1
	case s.n == 1 && ns.classOf(s.ex[0]).owner != ns.classOf(i).owner:
		s.ex[1], s.n = i, 2
	}
}

func (s *ownerSummary) merge(ns *nodeSet, o ownerSummary) {
	for _, i := range o.ex[:o.n] {
		s.add(ns, i)
	}
}

// summarize computes, for each principal of the nodes but their names,
// the owners of the nodes it covers as a source and of the untagged nodes
// it covers as a destination (a name covers its node alone: see
// srcSummary).
func (ns *nodeSet) summarize() {
	n := len(ns.others)
	ns.srcSum, ns.dstSum = make([]ownerSummary, n), make([]ownerSummary, n)
	base := int32(ns.len())
	for i := range ns.recs {
		n := ns.unnamed(int32(i))
		for _, p := range n.srcP {
			ns.srcSum[p-base].add(ns, int32(i))
		}
		if len(n.id.Tags) == 0 {
			for _, p := range n.dstP {
				ns.dstSum[p-base].add(ns, int32(i))
			}
		}
	}
}

// srcSummary returns the owners of the nodes principal p covers as a
// source. A principal no node has (one only rules name) covers none.
func (ns *nodeSet) srcSummary(p int32) ownerSummary {
	switch {
	case ns == nil || int(p) >= ns.numPrincipals():
		return ownerSummary{}
	case int(p) < ns.len(): // node p's name
		return ownerSummary{n: 1, ex: [2]int32{p}}
	}
	return ns.srcSum[int(p)-ns.len()]
}

// dstSummary returns the owners of the untagged nodes principal p covers
// as a destination.
func (ns *nodeSet) dstSummary(p int32) ownerSummary {
	switch {
	case ns == nil || int(p) >= ns.numPrincipals():
		return ownerSummary{}
	case int(p) < ns.len():
		if len(ns.classOf(p).tags) > 0 {
			return ownerSummary{}
		}
		return ownerSummary{n: 1, ex: [2]int32{p}}
	}
	return ns.dstSum[int(p)-ns.len()]
}
