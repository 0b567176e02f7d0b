package policy

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzParse: Parse never panics; every error is a file:line:col *Error; a
// document that parses evaluates every pair of nodes the way Explain does.
// The seed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(withKeys(badBase)))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Parse(data, "fuzz.hujson")
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
		if len(doc.nodes) > 20 {
			return
		}
		for _, s := range doc.nodes {
			for _, d := range doc.nodes {
				for _, user := range []string{"root", "deploy", "alice", "alice-admin", ""} {
					got, err := doc.Evaluate(context.Background(), Request{Key: s.id.Key, Self: d.id.Key, User: user})
					if err != nil {
						t.Fatal(err)
					}
					e, err := doc.Explain(s.id.Node, d.id.Node, user)
					if err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff(e.Decision, got, cmpopts.EquateEmpty()); diff != "" {
						t.Fatalf("%s → %s as %s: Evaluate disagrees with Explain (-explain +evaluate):\n%s", s.id.Node, d.id.Node, user, diff)
					}
					_ = e.String()
					if got.Allowed() && user == "root" {
						named := false
						r := doc.rules[0]
						for _, rr := range doc.rules {
							if rr.name == got.Rule {
								r = rr
							}
						}
						for _, u := range r.users.names {
							named = named || u == "root"
						}
						if !named {
							t.Fatalf("%s → %s: root allowed by %s, which does not name root", s.id.Node, d.id.Node, got.Rule)
						}
					}
				}
			}
		}
	})
}
