// The nodes a mesh document compiles, with their principals and the owner
// summaries the safety rule reads: built once from the "nodes" value and
// shared, unchanged, by the documents Reparse makes from it.

package policy

import (
	"crypto/sha256"
	"slices"
	"strings"
)

// nodeSet is what a mesh document compiles from its "nodes": the nodes,
// their index by key, and the principals they are named by. It never
// changes once compiled, so the documents [Document.Reparse] makes from a
// document share it.
type nodeSet struct {
	// sum is the SHA-256 of the bytes of the "nodes" value it was
	// compiled from.
	sum   [sha256.Size]byte
	nodes []node
	byKey prefixIndex
	keys  keyIndex // byKey's twin for Evaluate (index.go)
	// principals maps the names the nodes are named by (node names,
	// owners, tags, *, autogroup:member) to their ids: node i's name has
	// id i, so it is also the index of the nodes by name.
	principals map[string]int32
	owners     map[string]bool // the owners of the nodes
	tags       []string        // the tags of the nodes, sorted
	// By principal after the nodes' names (see srcSummary): the owners
	// of the nodes it covers as src, and of the untagged nodes it covers
	// as dst (for compiler.safety).
	srcSum, dstSum []ownerSummary
}

// newNodeSet gives compiled nodes (with their index by key and their
// owners) their principals: node i's name is id i, then *, owners,
// autogroup:member and tags in the order the nodes first name them. It
// returns nil if two nodes have one name (which compiler.nodes reports
// before: only quickNodes leaves it to this).
func newNodeSet(nodes []node, byKey prefixIndex, owners map[string]bool) *nodeSet {
	principals := make(map[string]int32, len(nodes)+len(owners)+64)
	for i := range nodes {
		principals[nodes[i].id.Node] = int32(i)
	}
	if len(principals) != len(nodes) {
		return nil
	}
	// The few other names are looked up in a small map of their own:
	// the large one costs a cache miss a lookup.
	other := map[string]int32{}
	var tags []string
	id := func(name string) int32 {
		if p, ok := other[name]; ok {
			return p
		}
		p := int32(len(principals))
		principals[name], other[name] = p, p
		if strings.HasPrefix(name, "tag:") {
			tags = append(tags, name)
		}
		return p
	}
	// Every node's principals share one array: one allocation, not two
	// per node.
	total := 0
	for i := range nodes {
		n := &nodes[i]
		total += 4 + 2*len(n.id.Tags)
		if n.id.Owner != "" {
			total += 2
		}
	}
	slab := make([]int32, 0, total)
	carve := func(size int) []int32 {
		p := slab[len(slab) : len(slab) : len(slab)+size]
		slab = slab[:len(slab)+size]
		return p
	}
	for i := range nodes {
		n := &nodes[i]
		srcN := 2 + len(n.id.Tags)
		if n.id.Owner != "" {
			srcN += 2
		}
		n.srcP, n.dstP = carve(srcN), carve(2+len(n.id.Tags))
		n.srcP = append(n.srcP, int32(i), id(anyone))
		n.dstP = append(n.dstP, int32(i), id(anyone))
		if n.id.Owner != "" {
			n.srcP = append(n.srcP, id(n.id.Owner), id(autogroupMember))
		}
		for _, t := range n.id.Tags {
			n.srcP = append(n.srcP, id(t))
			n.dstP = append(n.dstP, id(t))
		}
		slices.Sort(n.srcP)
		slices.Sort(n.dstP)
	}
	slices.Sort(tags)
	ns := &nodeSet{nodes: nodes, byKey: byKey, keys: newKeyIndex(nodes), principals: principals, owners: owners, tags: tags}
	ns.summarize()
	return ns
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

// summarize computes, for each principal of the nodes but their names,
// the owners of the nodes it covers as a source and of the untagged nodes
// it covers as a destination (a name covers its node alone: see
// srcSummary).
func (ns *nodeSet) summarize() {
	nodes := ns.nodes
	n := len(ns.principals) - len(nodes)
	ns.srcSum, ns.dstSum = make([]ownerSummary, n), make([]ownerSummary, n)
	for i := range nodes {
		for _, p := range nodes[i].srcP {
			if int(p) >= len(nodes) {
				ns.srcSum[int(p)-len(nodes)].add(nodes, int32(i))
			}
		}
		if len(nodes[i].id.Tags) == 0 {
			for _, p := range nodes[i].dstP {
				if int(p) >= len(nodes) {
					ns.dstSum[int(p)-len(nodes)].add(nodes, int32(i))
				}
			}
		}
	}
}

// srcSummary returns the owners of the nodes principal p covers as a
// source. A principal no node has (one only rules name) covers none.
func (ns *nodeSet) srcSummary(p int32) ownerSummary {
	switch {
	case ns == nil || int(p) >= len(ns.principals):
		return ownerSummary{}
	case int(p) < len(ns.nodes): // node p's name
		return ownerSummary{n: 1, ex: [2]int32{p}}
	}
	return ns.srcSum[int(p)-len(ns.nodes)]
}

// dstSummary returns the owners of the untagged nodes principal p covers
// as a destination.
func (ns *nodeSet) dstSummary(p int32) ownerSummary {
	switch {
	case ns == nil || int(p) >= len(ns.principals):
		return ownerSummary{}
	case int(p) < len(ns.nodes):
		if len(ns.nodes[p].id.Tags) > 0 {
			return ownerSummary{}
		}
		return ownerSummary{n: 1, ex: [2]int32{p}}
	}
	return ns.dstSum[int(p)-len(ns.nodes)]
}
