package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestNameIndex: every node is found by its name, in a set of any size,
// names that are prefixes of others included; a name no node has is not
// found; and two nodes with one name make no node set.
func TestNameIndex(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 100, 5000} {
		b := newNodeBuilder(n / 2) // grows
		for i := range n {
			addNode(b, fmt.Sprint("n", i), testKey(i+1), "u@example.com", nil)
		}
		ns := b.finish()
		if ns == nil {
			t.Fatalf("%d nodes: no node set", n)
		}
		for i := range n {
			name := fmt.Sprint("n", i)
			if got, ok := ns.findName(name); !ok || got != int32(i) {
				t.Fatalf("%d nodes: %s found at %d, %v", n, name, got, ok)
			}
			if got := ns.name(int32(i)); got != name {
				t.Fatalf("%d nodes: node %d is called %q, want %q", n, i, got, name)
			}
			if got, ok := ns.findKey(testKey(i + 1)); !ok || got != int32(i) {
				t.Fatalf("%d nodes: key %d found at %d, %v", n, i+1, got, ok)
			}
		}
		for _, absent := range []string{"", "n", fmt.Sprint("n", n), "x0", "n01"} {
			if got, ok := ns.findName(absent); ok {
				t.Fatalf("%d nodes: absent name %q found at %d", n, absent, got)
			}
		}
	}
	for _, names := range [][]string{{"a", "a"}, {"a", "b", "c", "b"}} {
		b := newNodeBuilder(0)
		for i, name := range names {
			addNode(b, name, testKey(i+1), "u@example.com", nil)
		}
		if ns := b.finish(); ns != nil {
			t.Errorf("%q: two nodes with one name made a node set", names)
		}
	}
}

// TestNodeClasses: nodes of one owner (however its case is spelled) share
// what they have in common, and so do nodes with the same tags in the
// same order, while each node keeps its own name and key and the tags as
// its entry writes them; the tree and the quick way agree, and the
// shared tags cannot be appended to through one node's identity.
func TestNodeClasses(t *testing.T) {
	src := withKeys(`{
  "nodes": {
    "a1": {"key": "KEY1", "owner": "ann@example.com"},
    "b1": {"key": "KEY2", "owner": "bob@example.com"},
    "a2": {"key": "KEY3", "owner": "Ann@Example.com"},
    "s1": {"key": "KEY4", "tags": ["tag:x", "tag:y"]},
    "s2": {"key": "KEY5", "tags": ["tag:y", "tag:x"]},
    "s3": {"key": "KEY6", "tags": ["tag:x", "tag:y"]},
    "s4": {"key": "KEY7", "tags": ["tag:y"]},
  },
  "tagOwners": {"tag:x": [], "tag:y": []},
  "ssh": [
    {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["="]},
    {"action": "accept", "src": ["tag:x"], "dst": ["tag:y"], "users": ["deploy"]},
  ],
}`)
	want := []Identity{
		{Key: testKey(1), Node: "a1", Owner: "ann@example.com"},
		{Key: testKey(2), Node: "b1", Owner: "bob@example.com"},
		{Key: testKey(3), Node: "a2", Owner: "ann@example.com"},
		{Key: testKey(4), Node: "s1", Tags: []string{"tag:x", "tag:y"}},
		{Key: testKey(5), Node: "s2", Tags: []string{"tag:y", "tag:x"}},
		{Key: testKey(6), Node: "s3", Tags: []string{"tag:x", "tag:y"}},
		{Key: testKey(7), Node: "s4", Tags: []string{"tag:y"}},
	}
	quick, err := Parse([]byte(src), "p.hujson")
	if err != nil {
		t.Fatal(err)
	}
	tree, err := parseTree([]byte(src), "p.hujson")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []*Document{quick, tree} {
		if diff := cmp.Diff(want, doc.Nodes(), cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("Nodes (-want +got):\n%s", diff)
		}
		for _, w := range want {
			if id, ok := doc.Node(w.Key); !ok || !cmp.Equal(id, w, cmpopts.EquateEmpty()) {
				t.Errorf("Node(%s) = %v, %v, want %v", w.Key.Short(), id, ok, w)
			}
			if id, ok := doc.NodeByName(w.Node); !ok || !cmp.Equal(id, w, cmpopts.EquateEmpty()) {
				t.Errorf("NodeByName(%s) = %v, %v, want %v", w.Node, id, ok, w)
			}
		}
		ns := doc.nodeSet
		// ann's two nodes, bob's, tag:x+tag:y (s1, s3), tag:y+tag:x, tag:y.
		if got := len(ns.classes); got != 5 {
			t.Errorf("%d classes, want 5", got)
		}
		class := func(i int) int32 { return ns.recs[i].class }
		if class(0) != class(2) || class(3) != class(5) || class(0) == class(1) || class(3) == class(4) {
			t.Errorf("classes by node: %v", ns.recs)
		}
		id, _ := doc.Node(testKey(4))
		_ = append(id.Tags, "tag:z")
		if id, _ := doc.Node(testKey(6)); !slices.Equal(id.Tags, []string{"tag:x", "tag:y"}) {
			t.Errorf("an append to s1's tags changed s3's: %q", id.Tags)
		}
		for _, c := range []struct {
			src, dst, user string
			want           Action
		}{
			{"a1", "a2", "ann", Accept}, // one owner: autogroup:self
			{"a2", "a1", "ann", Accept},
			{"b1", "a1", "bob", Reject}, // another's
			{"a1", "b1", "ann", Reject},
			{"s1", "s4", "deploy", Accept},
			{"s2", "s4", "deploy", Accept}, // tag:x, whatever the order
			{"s4", "s1", "deploy", Reject}, // s4 has no tag:x
			{"s1", "s1", "s1", Reject},     // tagged nodes have no self
		} {
			s, _ := doc.NodeByName(c.src)
			d, _ := doc.NodeByName(c.dst)
			got, err := doc.Evaluate(t.Context(), Request{Key: s.Key, Self: d.Key, User: c.user})
			if err != nil || got.Action != c.want {
				t.Errorf("%s → %s as %s: %v, %v, want %v", c.src, c.dst, c.user, got.Action, err, c.want)
			}
		}
	}
}

// TestNodesNamed: a node name stands for its node, a tag for its nodes in
// the document's order, anything else for none; as a linear scan of
// Nodes finds them.
func TestNodesNamed(t *testing.T) {
	doc, err := Parse([]byte(genDoc(rand.New(rand.NewPCG(1, 2)), 200, 20)), "gen.hujson")
	if err != nil {
		t.Fatal(err)
	}
	all := doc.Nodes()
	for _, name := range []string{"n0", "n5", "n199", "n200", "tag:t0", "tag:t3", "tag:t99", "u0@example.com", "*", ""} {
		var want []Identity
		for _, id := range all {
			if id.Node == name || slices.Contains(id.Tags, name) {
				want = append(want, id)
			}
		}
		if diff := cmp.Diff(want, doc.NodesNamed(name), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("NodesNamed(%q) (-scan +got):\n%s", name, diff)
		}
	}
	tn, err := Parse([]byte(`{"identity": "tailnet"}`), "t.hujson")
	if err != nil {
		t.Fatal(err)
	}
	if got := tn.NodesNamed("tag:x"); got != nil {
		t.Errorf("a tailnet document's NodesNamed = %v", got)
	}
}

// TestNodeRecordSizes: a node's record and a class's fit the lines of the
// cache their comments promise.
func TestNodeRecordSizes(t *testing.T) {
	if got := unsafe.Sizeof(nodeRec{}); got != 40 {
		t.Errorf("nodeRec is %d bytes, want 40", got)
	}
	if got := unsafe.Sizeof(nodeClass{}); got != 64 {
		t.Errorf("nodeClass is %d bytes, want 64", got)
	}
}

// TestManyTags: a node with more tags than its class holds inline is
// named by each of them, as a source and as a destination, and by no
// other.
func TestManyTags(t *testing.T) {
	src := withKeys(`{
  "nodes": {
    "many": {"key": "KEY1", "tags": ["tag:a", "tag:b", "tag:c", "tag:d", "tag:e", "tag:f"]},
    "few":  {"key": "KEY2", "tags": ["tag:g"]},
  },
  "tagOwners": {"tag:a": [], "tag:b": [], "tag:c": [], "tag:d": [], "tag:e": [], "tag:f": [], "tag:g": []},
  "ssh": [
    {"action": "accept", "src": ["tag:f"], "dst": ["tag:g"], "users": ["out"]},
    {"action": "accept", "src": ["tag:g"], "dst": ["tag:f"], "users": ["in"]},
    {"action": "accept", "src": ["tag:g"], "dst": ["tag:a"], "users": ["a"]},
  ],
}`)
	for _, parse := range []func([]byte, string) (*Document, error){Parse, parseTree} {
		doc, err := parse([]byte(src), "p.hujson")
		if err != nil {
			t.Fatal(err)
		}
		if c := doc.nodeSet.classOf(0); c.n != longList {
			t.Fatalf("seven principals held inline (n %d)", c.n)
		}
		for _, c := range []struct {
			src, dst, user string
			want           Action
		}{
			{"many", "few", "out", Accept},
			{"few", "many", "in", Accept},
			{"few", "many", "a", Accept},
			{"few", "many", "out", Reject},
			{"many", "few", "in", Reject},
		} {
			s, _ := doc.NodeByName(c.src)
			d, _ := doc.NodeByName(c.dst)
			got, err := doc.Evaluate(t.Context(), Request{Key: s.Key, Self: d.Key, User: c.user})
			if err != nil || got.Action != c.want {
				t.Errorf("%s → %s as %s: %v, %v, want %v", c.src, c.dst, c.user, got.Action, err, c.want)
			}
		}
	}
}
