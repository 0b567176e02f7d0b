package policy

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzParse: Parse never panics; every error is a file:line:col *Error; a
// document that parses evaluates every pair of nodes the way Explain does.
// A tailnet document ("identity": "tailnet") is evaluated between logins
// and tag sets instead, and never lets anyone into another person's
// untagged node. Parse, which compiles plain "nodes" without a tree
// (quickNodes), gives what the tree of the whole file gives, errors
// included, and so does a Reparse from badBase. The seed corpus is in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(withKeys(badBase)))
	f.Add([]byte(tailnetBase))
	base, err := Parse([]byte(withKeys(badBase)), "fuzz.hujson")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Parse(data, "fuzz.hujson")
		treeDoc, treeErr := parseTree(data, "fuzz.hujson")
		if errString(err) != errString(treeErr) {
			t.Fatalf("Parse error:\n%v\nfrom the tree:\n%v", err, treeErr)
		}
		reDoc, reErr := base.Reparse(data, "fuzz.hujson")
		if errString(reErr) != errString(treeErr) {
			t.Fatalf("Reparse error:\n%v\nfrom the tree:\n%v", reErr, treeErr)
		}
		if err == nil {
			sameDocument(t, treeDoc, doc)
			sameDocument(t, treeDoc, reDoc)
		}
		if err != nil {
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("error is not a *Error: %v", err)
			}
			if perr.Line < 1 || perr.Column < 1 {
				t.Fatalf("bad position in %v", err)
			}
			return
		}
		if doc.tailnet {
			fuzzTailnet(t, doc)
			return
		}
		ids := doc.Nodes()
		if len(ids) > 20 {
			return
		}
		for _, s := range ids {
			for _, d := range ids {
				for _, user := range []string{"root", "deploy", "alice", "alice-admin", ""} {
					got, err := doc.Evaluate(context.Background(), Request{Key: s.Key, Self: d.Key, User: user})
					if err != nil {
						t.Fatal(err)
					}
					e, err := doc.Explain(s.Node, d.Node, user)
					if err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff(e.Decision, got, cmpopts.EquateEmpty()); diff != "" {
						t.Fatalf("%s → %s as %s: Evaluate disagrees with Explain (-explain +evaluate):\n%s", s.Node, d.Node, user, diff)
					}
					_ = e.String()
					checkRootNamed(t, doc, got, user, s.Node, d.Node)
				}
			}
		}
	})
}

// checkRootNamed fails t if d lets root in by a rule that does not name root.
func checkRootNamed(t *testing.T, doc *Document, d Decision, user, src, dst string) {
	t.Helper()
	if !d.Allowed() || user != "root" {
		return
	}
	for _, r := range doc.rules {
		if r.name == d.Rule && slices.Contains(r.users.names, "root") {
			return
		}
	}
	t.Fatalf("%s → %s: root allowed by %s, which does not name root", src, dst, d.Rule)
}

// fuzzTailnet evaluates a tailnet document between a few logins and the
// tag sets its rules name, as Evaluate does and as Explain does.
func fuzzTailnet(t *testing.T, doc *Document) {
	forms := []string{"alice@example.com", "bob@example.com", "ann@example.com"}
	var tags []string
	for _, name := range slices.Sorted(maps.Keys(doc.principals)) {
		if strings.HasPrefix(name, "tag:") {
			forms = append(forms, name)
			tags = append(tags, name)
		} else if strings.Contains(name, "@") && len(forms) < 6 {
			forms = append(forms, name)
		}
	}
	if len(tags) > 1 {
		forms = append(forms, tags[0]+","+tags[1])
	}
	if len(forms) > 10 {
		forms = forms[:10]
	}
	for _, sf := range forms {
		for _, df := range forms {
			s, err1 := parseTailnetIdentity(sf)
			d, err2 := parseTailnetIdentity(df)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s, %s: %v, %v", sf, df, err1, err2)
			}
			for _, user := range []string{"root", "deploy", "alice", "alice-admin", ""} {
				got, err := doc.Evaluate(context.Background(), Request{User: user, Caller: &s, Server: &d})
				if err != nil {
					t.Fatal(err)
				}
				e, err := doc.Explain(sf, df, user)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(e.Decision, got, cmpopts.EquateEmpty()); diff != "" {
					t.Fatalf("%s → %s as %s: Evaluate disagrees with Explain (-explain +evaluate):\n%s", sf, df, user, diff)
				}
				_ = e.String()
				if got.Allowed() && len(d.Tags) == 0 && (s.Owner == "" || s.Owner != d.Owner) {
					t.Fatalf("%s → %s as %s: let into another's untagged node by %s", sf, df, user, got.Rule)
				}
				checkRootNamed(t, doc, got, user, sf, df)
			}
		}
	}
}
