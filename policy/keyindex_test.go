package policy

import (
	"fmt"
	"testing"

	"github.com/sshmesh/sshmesh/meshkey"
)

// TestKeysSharingAPrefix: nodes whose keys begin with the same 8 bytes
// (the index's first look) are each found by their own key, through the
// quick way and the tree alike, and a key that no node has is not found,
// whatever it begins with.
func TestKeysSharingAPrefix(t *testing.T) {
	keyWith := func(last byte) meshkey.Public {
		k := testKey(1)
		k[31] = last
		return k
	}
	a, b, c, stranger := keyWith(1), keyWith(2), keyWith(3), keyWith(4)
	for _, a1 := range []string{`"a"`, `"\u0061"`} { // the second, an escape, takes the tree
		src := fmt.Sprintf(`{"nodes": {
  %s: {"key": %q, "owner": "ann@example.com"},
  "b": {"key": %q, "owner": "bob@example.com"},
  "c": {"key": %q, "tags": ["tag:s"]}},
  "tagOwners": {"tag:s": []},
  "ssh": [{"action": "accept", "src": ["bob@example.com"], "dst": ["tag:s"], "users": ["deploy"]}],
}`, a1, a, b, c)
		doc, err := Parse([]byte(src), "p.hujson")
		if err != nil {
			t.Fatal(err)
		}
		for name, k := range map[string]meshkey.Public{"a": a, "b": b, "c": c} {
			if id, ok := doc.Node(k); !ok || id.Node != name {
				t.Errorf("%q: Node(%s) = %v, %v, want node %s", a1, k, id, ok, name)
			}
		}
		if id, ok := doc.Node(stranger); ok {
			t.Errorf("%q: a key of no node found as %v", a1, id)
		}
		for caller, want := range map[meshkey.Public]Action{a: Reject, b: Accept, stranger: Reject} {
			d, err := doc.Evaluate(t.Context(), Request{Key: caller, Self: c, User: "deploy"})
			if err != nil || d.Action != want {
				t.Errorf("%q: %s → c: %v, %v, want %v", a1, caller.Short(), d.Action, err, want)
			}
		}
		dup := fmt.Sprintf(`{"nodes": {"a": {"key": %q, "owner": "ann@example.com"}, "b": {"key": %q, "owner": "bob@example.com"}}}`, b, b)
		if _, err := Parse([]byte(dup), "p.hujson"); err == nil {
			t.Error("two nodes with one key parsed")
		}
	}
}
