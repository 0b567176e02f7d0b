package policy

import (
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/tailscale/hujson"
)

// sameDocument fails t unless a and b hold the same compiled document,
// unexported parts and principal ids included.
func sameDocument(t *testing.T, want, got *Document) {
	t.Helper()
	opts := cmp.Options{
		cmp.Exporter(func(reflect.Type) bool { return true }),
		cmpopts.IgnoreFields(Document{}, "Now"),
		cmpopts.EquateEmpty(),
		// A key table's seed is drawn at random for each one built, so
		// its slots differ; what it finds is held to the nodes by
		// TestKeyIndex and TestIndexMatchesReference.
		cmp.Comparer(func(a, b keyIndex) bool { return filledSlots(a.slots) == filledSlots(b.slots) }),
		cmp.Comparer(func(a, b nameIndex) bool { return filledSlots(a.slots) == filledSlots(b.slots) }),
	}
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Fatalf("Reparse and Parse differ (-parse +reparse):\n%s", diff)
	}
}

// filledSlots is the number of entries a table of the key or name index
// holds.
func filledSlots[E uint32 | uint64](slots []E) int {
	n := 0
	for _, e := range slots {
		if e != 0 {
			n++
		}
	}
	return n
}

// reparse parses before, then reparses after from it; it returns both
// documents, and the error of Reparse, which must be Parse's for after.
func reparse(t *testing.T, before, after string) (prev, doc *Document, err error) {
	t.Helper()
	prev, err = Parse([]byte(before), "p.hujson")
	if err != nil {
		t.Fatalf("the document before: %v", err)
	}
	want, wantErr := Parse([]byte(after), "p.hujson")
	doc, err = prev.Reparse([]byte(after), "p.hujson")
	if errString(err) != errString(wantErr) {
		t.Fatalf("Reparse error:\n%v\nParse error:\n%v", err, wantErr)
	}
	if err == nil {
		sameDocument(t, want, doc)
		if doc.Sum() != want.Sum() {
			t.Fatal("Reparse's document has another Sum than Parse's of the same bytes")
		}
	}
	if wantErr == nil && (prev.Sum() == want.Sum()) != (before == after) {
		t.Fatalf("Sum: the same for the two files: %v; the files are the same: %v", prev.Sum() == want.Sum(), before == after)
	}
	reparseFile(t, prev, before, after, doc)
	return prev, doc, err
}

// reparseFile checks that ReadFile and ReparseFile, from prev (parsed
// from before), make of a file holding after what Parse does (and share
// prev's nodes as Reparse, which made doc, did), and that File.Sum tells
// whether the file changed.
func reparseFile(t *testing.T, prev *Document, before, after string, doc *Document) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "p.hujson")
	if err := os.WriteFile(path, []byte(after), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path, prev)
	if err != nil {
		t.Fatal(err)
	}
	if f.Sum != ([sha256.Size]byte{}) && (f.Sum == prev.Sum()) != (before == after) {
		t.Fatalf("ReadFile's Sum is prev's: %v; the file is the same: %v", f.Sum == prev.Sum(), before == after)
	}
	want, wantErr := Parse([]byte(after), path)
	got, err := prev.ReparseFile(f)
	if errString(err) != errString(wantErr) {
		t.Fatalf("ReparseFile error:\n%v\nParse error:\n%v", err, wantErr)
	}
	if err != nil {
		return
	}
	sameDocument(t, want, got)
	if f.Sum != ([sha256.Size]byte{}) && f.Sum != want.Sum() || got.Sum() != want.Sum() {
		t.Fatal("ReadFile's Sum, or ReparseFile's document's, is not that of the document Parse makes of the file")
	}
	if doc != nil && (got.nodeSet == prev.nodeSet) != (doc.nodeSet == prev.nodeSet) {
		t.Fatalf("ReparseFile shares the nodes: %v; Reparse: %v", got.nodeSet == prev.nodeSet, doc.nodeSet == prev.nodeSet)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestReparseErrors: Reparse from a good document reports every problem
// of a bad new version exactly as Parse does (file:line:col, field), the
// nodes unchanged or not.
func TestReparseErrors(t *testing.T) {
	base := withKeys(badBase)
	for _, tt := range badEdits {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := reparse(t, base, withKeys(strings.Replace(badBase, tt.old, tt.new, 1)))
			if err == nil {
				t.Fatal("Reparse succeeded")
			}
		})
	}
}

// TestReparseReusesNodes: a new version whose "nodes" has the same bytes
// shares the nodes of the document before, wherever they moved in the
// file, and is the document Parse makes of it; any other version gets
// nodes of its own.
func TestReparseReusesNodes(t *testing.T) {
	base := withKeys(badBase)
	nodesOf := func(s string) string { // the "nodes" value of base
		i := strings.Index(s, `"nodes": `) + len(`"nodes": `)
		return s[i : strings.Index(s, "},\n  \"groups\"")+1]
	}
	nodes := nodesOf(base)
	tests := []struct {
		name   string
		after  string
		shared bool
	}{
		{"unchanged", base, true},
		{"a rule changed", strings.Replace(base, `"users": ["autogroup:nonroot"]`, `"users": ["deploy", "ops"]`, 1), true},
		{"a rule added", strings.Replace(base, "  ],\n  \"tests\"", `    {"action": "reject", "src": ["lap"], "dst": ["srv"], "users": ["nobody"]},`+"\n  ],\n  \"tests\"", 1), true},
		{"nodes moved to the end, comments added", strings.Replace(strings.Replace(base, `"nodes": `+nodes+",", "// people first\n", 1), "\n}", "\n  /* the nodes */ \"nodes\" : "+nodes+", // last\n}", 1), true},
		{"a group changed", strings.Replace(base, `["ann@example.com"]}`, `["ann@example.com", "bob@example.com"]}`, 1), true},
		{"a node's owner changed", strings.Replace(base, `"owner": "bob@example.com"`, `"owner": "carl@example.com"`, 1), false},
		{"a node's key changed", strings.Replace(base, withKeys("KEY2"), withKeys("KEY4"), 1), false},
		{"a node added", strings.Replace(base, `"srv":`, `"srv2": {"key": "`+withKeys("KEY5")+`", "tags": ["tag:server"]}, "srv":`, 1), false},
		{"spacing in the nodes changed", strings.Replace(base, `"lap":     {`, `"lap": {`, 1), false},
		{"nodes key spelled with an escape", strings.Replace(base, `"nodes"`, `"nod\u0065s"`, 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prev, doc, err := reparse(t, base, tt.after)
			if err != nil {
				t.Fatal(err)
			}
			if got := doc.nodeSet == prev.nodeSet; got != tt.shared {
				t.Errorf("nodes shared with the document before: %v, want %v", got, tt.shared)
			}
			// And from the new document back to the old one.
			want, _ := Parse([]byte(base), "p.hujson")
			back, err := doc.Reparse([]byte(base), "p.hujson")
			if err != nil {
				t.Fatal(err)
			}
			sameDocument(t, want, back)
		})
	}
}

// TestReparseFallsBack: where the reused nodes would not be what Parse
// makes, Reparse parses the whole file: a tag of a node no longer
// declared, a "nodes" twice, a tailnet document, a document that is no
// longer an object.
func TestReparseFallsBack(t *testing.T) {
	base := withKeys(badBase)
	for name, after := range map[string]string{
		"a node's tag undeclared": strings.Replace(base, `"tagOwners": {"tag:server": ["group:ops"]}`, `"tagOwners": {"tag:web": ["group:ops"]}`, 1),
		"nodes twice":             strings.Replace(base, `"groups":`, `"nodes": {}, "groups":`, 1),
		"tailnet":                 strings.Replace(base, `"groups":`, `"identity": "tailnet", "groups":`, 1),
		"an array":                "[" + base + "]",
		"cut short":               base[:len(base)-3],
		"a comment left open":     strings.Replace(base, `"groups":`, `/* "groups":`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := reparse(t, base, after); err == nil {
				t.Fatal("Reparse succeeded")
			}
		})
	}
}

// TestReparseRuleChangeDecides: on a large random document, a version
// with one rule changed, reparsed, shares the nodes and decides every
// request as a fresh Parse of it does.
func TestReparseRuleChangeDecides(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	before := genDoc(rnd, 400, 300)
	i := strings.Index(before, `"ssh"`)
	j := i + strings.Index(before[i:], `"users": [`) + len(`"users": [`)
	after := before[:j] + `"extra", ` + before[j:]
	prev, doc, err := reparse(t, before, after)
	if err != nil {
		t.Fatal(err)
	}
	if doc.nodeSet != prev.nodeSet {
		t.Fatal("a rule change compiled the nodes again")
	}
	fresh, _ := Parse([]byte(after), "p.hujson")
	ctx := context.Background()
	for _, user := range []string{"root", "extra", "deploy", "u1"} {
		ids := doc.Nodes()
		for s := range ids {
			for d := range ids {
				r := Request{Key: ids[s].Key, Self: ids[d].Key, User: user}
				want, _ := fresh.Evaluate(ctx, r)
				got, _ := doc.Evaluate(ctx, r)
				if want.Rule == got.Rule && want.Action == got.Action && want.LocalUser == got.LocalUser && want.Caller.Node == got.Caller.Node {
					continue
				}
				if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
					t.Fatalf("%s → %s as %s (-parse +reparse):\n%s", ids[s].Node, ids[d].Node, user, diff)
				}
			}
		}
	}
}

// TestNodesValue: the skimmer finds the "nodes" value where hujson does.
func TestNodesValue(t *testing.T) {
	for _, src := range []string{
		withKeys(badBase),
		genDoc(rand.New(rand.NewPCG(1, 2)), 50, 20),
		`{"ssh": [], /* "nodes": {} */ "a": "x\"}", "nodes": {"n": {"key": "k", "tags": ["t"]}}, // x
		}`,
		`{"nodes":{}}`,
	} {
		start, end, ok := nodesValue([]byte(src))
		if !ok {
			t.Fatalf("no nodes found in %q", src)
		}
		v, err := hujson.Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range v.Value.(*hujson.Object).Members {
			if m.Name.Value.(hujson.Literal).String() == "nodes" && (m.Value.StartOffset != start || m.Value.EndOffset != end) {
				t.Errorf("found %d to %d, hujson has %d to %d", start, end, m.Value.StartOffset, m.Value.EndOffset)
			}
		}
	}
}

// TestQuickNodes: Parse compiles plainly written nodes without a tree and
// gets the document the tree gives; nodes written otherwise take the tree.
func TestQuickNodes(t *testing.T) {
	base := withKeys(badBase)
	rnd := rand.New(rand.NewPCG(5, 6))
	tests := []struct {
		name  string
		doc   string
		quick bool
	}{
		{"base", base, true},
		{"random", genDoc(rnd, 300, 100), true},
		{"random tailnet", genTailnetDoc(rnd, 300, 100), false},
		{"owners in capitals", strings.Replace(base, `"owner": "bob@example.com"`, `"owner": "Bob@Example.com"`, 1), true},
		{"no spaces", strings.ReplaceAll(base, " ", ""), true},
		{"no trailing comma", strings.Replace(base, "},\n  },", "}\n  },", 1), true},
		{"an owner with an empty tags list", strings.Replace(base, `"owner": "bob@example.com"`, `"owner": "bob@example.com", "tags": []`, 1), true},
		{"two tags", strings.Replace(strings.Replace(base, `"tags": ["tag:server"]`, `"tags": ["tag:server", "tag:db",]`, 1), `"tagOwners": {`, `"tagOwners": {"tag:db": ["group:ops"], `, 1), true},
		{"comments", strings.Replace(strings.Replace(base, `"lap": `, "// ann's\n\"lap\": ", 1), `"key": "KEY3", `, `"key": "KEY3" /* srv */, `, 1), true},
		{"an escape", strings.Replace(base, `"lap": `, `"l\u0061p": `, 1), false},
		{"a key with spaces", strings.Replace(base, `"KEY2"`, `" KEY2 "`, 1), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(withKeys(tt.doc))
			want, err := parseTree(data, "p.hujson")
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(data, "p.hujson")
			if err != nil {
				t.Fatal(err)
			}
			sameDocument(t, want, got)
			start, end, ok := nodesValue(data)
			if quick := ok && quickNodes(data[start:end]) != nil; quick != tt.quick {
				t.Errorf("compiled without a tree: %v, want %v", quick, tt.quick)
			}
		})
	}
}

// TestQuickNodesErrors: a bad document is reported as the tree reports
// it, whatever is wrong in its nodes.
func TestQuickNodesErrors(t *testing.T) {
	for _, tt := range badEdits {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(withKeys(strings.Replace(badBase, tt.old, tt.new, 1)))
			_, want := parseTree(data, "p.hujson")
			_, got := Parse(data, "p.hujson")
			if want == nil || errString(got) != errString(want) {
				t.Fatalf("Parse error:\n%v\nfrom the tree:\n%v", got, want)
			}
		})
	}
}
