package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// genDoc writes a random valid document with n nodes and r rules: four in
// five nodes are personal (two per person), the rest tagged; rules use every
// selector and user form, and reach only tagged nodes or autogroup:self.
func genDoc(rnd *rand.Rand, n, r int) string {
	var b strings.Builder
	people := max(1, n*4/5/2)
	tags := max(1, n/50)
	groups := max(1, people/10)
	b.WriteString("{\n\"nodes\": {\n")
	var tagged []int
	for i := range n {
		if i < people*2 {
			fmt.Fprintf(&b, "%q: {\"key\": %q, \"owner\": \"u%d@example.com\"},\n", fmt.Sprint("n", i), testKey(i+1), i/2)
		} else {
			tagged = append(tagged, i)
			fmt.Fprintf(&b, "%q: {\"key\": %q, \"tags\": [\"tag:t%d\"]},\n", fmt.Sprint("n", i), testKey(i+1), i%tags)
		}
	}
	b.WriteString("},\n\"groups\": {\n")
	for g := range groups {
		fmt.Fprintf(&b, "\"group:g%d\": [", g)
		for j := range 5 {
			fmt.Fprintf(&b, "\"u%d@example.com\", ", rnd.IntN(people)+j*0)
		}
		b.WriteString("],\n")
	}
	b.WriteString("},\n\"tagOwners\": {\n")
	for t := range tags {
		fmt.Fprintf(&b, "\"tag:t%d\": [\"group:g0\"],\n", t)
	}
	b.WriteString("},\n\"ssh\": [\n")
	srcs := func() string {
		switch rnd.IntN(8) {
		case 0:
			return "*"
		case 1:
			return "autogroup:member"
		case 2:
			return fmt.Sprintf("group:g%d", rnd.IntN(groups))
		case 3:
			return fmt.Sprintf("tag:t%d", rnd.IntN(tags))
		case 4:
			return fmt.Sprint("n", rnd.IntN(n))
		default:
			return fmt.Sprintf("u%d@example.com", rnd.IntN(people))
		}
	}
	dsts := func() string {
		switch rnd.IntN(4) {
		case 0:
			return "autogroup:self"
		case 1:
			if len(tagged) > 0 {
				return fmt.Sprint("n", tagged[rnd.IntN(len(tagged))])
			}
			return "autogroup:self"
		default:
			return fmt.Sprintf("tag:t%d", rnd.IntN(tags))
		}
	}
	userForms := []string{"root", "deploy", "=", "*", "autogroup:nonroot", "{localpart}-admin", "u1", "git"}
	for range r {
		action := []string{"accept", "accept", "check", "reject"}[rnd.IntN(4)]
		fmt.Fprintf(&b, "{\"action\": %q, \"src\": [%q, %q], \"dst\": [%q], \"users\": [%q, %q]",
			action, srcs(), srcs(), dsts(), userForms[rnd.IntN(len(userForms))], userForms[rnd.IntN(len(userForms))])
		if rnd.IntN(10) == 0 {
			fmt.Fprintf(&b, ", \"expires\": \"2026-0%d-01T00:00:00Z\"", 1+rnd.IntN(9))
		}
		if action != "reject" && rnd.IntN(4) == 0 {
			b.WriteString(`, "acceptEnv": ["LANG", "LC_*"], "localForward": ["localhost:*"]`)
		}
		b.WriteString("},\n")
	}
	b.WriteString("],\n}\n")
	return b.String()
}

// TestEvaluateMatchesExplain: on random documents, the precomputed Evaluate
// decides exactly as the rule-by-rule Explain.
func TestEvaluateMatchesExplain(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	users := []string{"root", "deploy", "u1", "u3", "u3-admin", "git", "x", "../x"}
	for round := range 20 {
		n, r := 5+rnd.IntN(60), 1+rnd.IntN(80)
		doc, err := Parse([]byte(genDoc(rnd, n, r)), "gen.hujson")
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		at := time.Date(2026, time.Month(1+rnd.IntN(12)), 1, 0, 0, 0, 0, time.UTC)
		doc.Now = func() time.Time { return at }
		for range 300 {
			si, di := rnd.IntN(len(doc.nodes)), rnd.IntN(len(doc.nodes))
			user := users[rnd.IntN(len(users))]
			s, d := doc.nodes[si].id, doc.nodes[di].id
			got, err := doc.Evaluate(context.Background(), Request{Key: s.Key, Self: d.Key, User: user})
			if err != nil {
				t.Fatal(err)
			}
			e, err := doc.Explain(s.Node, d.Node, user)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(e.Decision, got, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("round %d: %s → %s as %s: Evaluate disagrees with Explain (-explain +evaluate):\n%s\n%s", round, s.Node, d.Node, user, diff, e)
			}
		}
	}
}

// BenchmarkEvaluate: 10,000 nodes, 10,000 rules, random logins.
func BenchmarkEvaluate(b *testing.B) {
	rnd := rand.New(rand.NewPCG(3, 4))
	src := genDoc(rnd, 10000, 10000)
	doc, err := Parse([]byte(src), "bench.hujson")
	if err != nil {
		b.Fatal(err)
	}
	at := time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC)
	doc.Now = func() time.Time { return at }
	users := []string{"root", "deploy", "u1", "u3", "u3-admin", "git", "x"}
	reqs := make([]Request, 4096)
	for i := range reqs {
		reqs[i] = Request{Key: testKey(1 + rnd.IntN(10000)), Self: testKey(1 + rnd.IntN(10000)), User: users[rnd.IntN(len(users))]}
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := doc.Evaluate(ctx, reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEvaluateOneDestination: 10,000 rules that all cover the same
// caller and destination and differ only in the login name they allow, the
// case where walking the caller's or the destination's rules would be slow.
func BenchmarkEvaluateOneDestination(b *testing.B) {
	var s strings.Builder
	fmt.Fprintf(&s, `{"nodes": {"a": {"key": %q, "owner": "a@example.com"}, "t": {"key": %q, "tags": ["tag:t"]}},
"tagOwners": {"tag:t": []}, "ssh": [`, testKey(1), testKey(2))
	for i := range 10000 {
		fmt.Fprintf(&s, `{"action": "accept", "src": ["*"], "dst": ["tag:t"], "users": ["u%d"]},`, i)
	}
	s.WriteString("]}")
	doc, err := Parse([]byte(s.String()), "one.hujson")
	if err != nil {
		b.Fatal(err)
	}
	for _, user := range []string{"nobody", "u9999"} {
		r := Request{Key: testKey(1), Self: testKey(2), User: user}
		b.Run(user, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := doc.Evaluate(context.Background(), r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
