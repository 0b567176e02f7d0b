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
func genDoc(rnd *rand.Rand, n, r int) string { return genDocFor(rnd, n, r, genOptions{}) }

// genTailnetDoc is genDoc for a tailnet: the same people, tags, groups and
// kinds of rules, with no "nodes"; where genDoc names a node, it names
// autogroup:tagged (src) or a tag (dst), and some rules reach a person's
// nodes by login from that login, or reject into dst *. tailnetNodes gives
// the identities of its n nodes.
func genTailnetDoc(rnd *rand.Rand, n, r int) string {
	return genDocFor(rnd, n, r, genOptions{tailnet: true, byIdentity: true, tailnetForms: true})
}

// genOptions say what kind of document genDocFor writes.
type genOptions struct {
	tailnet      bool // "identity": "tailnet", no "nodes"
	byIdentity   bool // where genDoc names a node, name its login (src) or tag instead
	tailnetForms bool // add dst-by-login rules and rejects into dst * (tailnet only)
}

// tailnetNodes are the n nodes genTailnetDoc(_, n, _) speaks of, as the
// coordinator would name them.
func tailnetNodes(n int) []Identity {
	people, tags := max(1, n*4/5/2), max(1, n/50)
	ids := make([]Identity, n)
	for i := range ids {
		ids[i].Key = testKey(i + 1)
		if i < people*2 {
			ids[i].Owner = fmt.Sprintf("u%d@example.com", i/2)
		} else {
			ids[i].Tags = []string{fmt.Sprintf("tag:t%d", i%tags)}
		}
	}
	return ids
}

func genDocFor(rnd *rand.Rand, n, r int, o genOptions) string {
	var b strings.Builder
	people := max(1, n*4/5/2)
	tags := max(1, n/50)
	groups := max(1, people/10)
	var tagged []int
	if o.tailnet {
		b.WriteString("{\n\"identity\": \"tailnet\",\n\"groups\": {\n")
		for i := people * 2; i < n; i++ {
			tagged = append(tagged, i)
		}
	} else {
		b.WriteString("{\n\"nodes\": {\n")
		for i := range n {
			if i < people*2 {
				fmt.Fprintf(&b, "%q: {\"key\": %q, \"owner\": \"u%d@example.com\"},\n", fmt.Sprint("n", i), testKey(i+1), i/2)
			} else {
				tagged = append(tagged, i)
				fmt.Fprintf(&b, "%q: {\"key\": %q, \"tags\": [\"tag:t%d\"]},\n", fmt.Sprint("n", i), testKey(i+1), i%tags)
			}
		}
		b.WriteString("},\n\"groups\": {\n")
	}
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
			i := rnd.IntN(n)
			switch {
			case o.byIdentity && i < people*2:
				return fmt.Sprintf("u%d@example.com", i/2)
			case o.byIdentity:
				return fmt.Sprintf("tag:t%d", i%tags)
			}
			return fmt.Sprint("n", i)
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
				i := tagged[rnd.IntN(len(tagged))]
				if o.byIdentity {
					return fmt.Sprintf("tag:t%d", i%tags)
				}
				return fmt.Sprint("n", i)
			}
			return "autogroup:self"
		default:
			return fmt.Sprintf("tag:t%d", rnd.IntN(tags))
		}
	}
	userForms := []string{"root", "deploy", "=", "*", "autogroup:nonroot", "{localpart}-admin", "u1", "git"}
	for range r {
		action := []string{"accept", "accept", "check", "reject"}[rnd.IntN(4)]
		src1, src2, dst := srcs(), srcs(), dsts()
		if o.tailnetForms && rnd.IntN(8) == 0 {
			switch login := fmt.Sprintf("u%d@example.com", rnd.IntN(people)); {
			case action == "reject":
				dst = "*"
			default: // a person's own nodes, by login
				src1, src2, dst = login, login, login
			}
		}
		fmt.Fprintf(&b, "{\"action\": %q, \"src\": [%q, %q], \"dst\": [%q], \"users\": [%q, %q]",
			action, src1, src2, dst, userForms[rnd.IntN(len(userForms))], userForms[rnd.IntN(len(userForms))])
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
			ids := doc.Nodes()
			si, di := rnd.IntN(len(ids)), rnd.IntN(len(ids))
			user := users[rnd.IntN(len(users))]
			s, d := ids[si], ids[di]
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

// TestEvaluateMatchesExplainTailnet: on random tailnet documents, Evaluate
// with the coordinator's identities decides exactly as Explain with the
// same identities named by login or tags, and never lets anyone into
// another person's untagged node.
func TestEvaluateMatchesExplainTailnet(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	users := []string{"root", "deploy", "u1", "u3", "u3-admin", "git", "x", "../x"}
	for round := range 20 {
		n, r := 5+rnd.IntN(60), 1+rnd.IntN(80)
		doc, err := Parse([]byte(genTailnetDoc(rnd, n, r)), "gen.hujson")
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		ids := tailnetNodes(n)
		ids = append(ids, Identity{Tags: []string{"tag:t0", "tag:t1"}}, Identity{Owner: "nobody@example.com"})
		at := time.Date(2026, time.Month(1+rnd.IntN(12)), 1, 0, 0, 0, 0, time.UTC)
		doc.Now = func() time.Time { return at }
		for range 300 {
			s, d := ids[rnd.IntN(len(ids))], ids[rnd.IntN(len(ids))]
			user := users[rnd.IntN(len(users))]
			caller, server := Identity{Owner: s.Owner, Tags: s.Tags}, Identity{Owner: d.Owner, Tags: d.Tags}
			got, err := doc.Evaluate(context.Background(), Request{User: user, Caller: &caller, Server: &server})
			if err != nil {
				t.Fatal(err)
			}
			sf, df := tailnetForm(s), tailnetForm(d)
			e, err := doc.Explain(sf, df, user)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(e.Decision, got, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("round %d: %s → %s as %s: Evaluate disagrees with Explain (-explain +evaluate):\n%s\n%s", round, sf, df, user, diff, e)
			}
			if got.Allowed() && len(d.Tags) == 0 && s.Owner != d.Owner {
				t.Fatalf("round %d: %s let into %s's untagged node by %s", round, sf, df, got.Rule)
			}
		}
	}
}

// BenchmarkEvaluate: 10,000 nodes, 10,000 rules, random logins.
func BenchmarkEvaluate(b *testing.B) { benchmarkEvaluate(b, 10000, 10000) }

// BenchmarkEvaluateScale: BenchmarkEvaluate with 100,000 nodes (bench/run
// --scale reports it).
func BenchmarkEvaluateScale(b *testing.B) { benchmarkEvaluate(b, 100000, 10000) }

func benchmarkEvaluate(b *testing.B, nodes, rules int) {
	rnd := rand.New(rand.NewPCG(3, 4))
	src := genDoc(rnd, nodes, rules)
	doc, err := Parse([]byte(src), "bench.hujson")
	if err != nil {
		b.Fatal(err)
	}
	at := time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC)
	doc.Now = func() time.Time { return at }
	users := []string{"root", "deploy", "u1", "u3", "u3-admin", "git", "x"}
	reqs := make([]Request, 4096)
	for i := range reqs {
		reqs[i] = Request{Key: testKey(1 + rnd.IntN(nodes)), Self: testKey(1 + rnd.IntN(nodes)), User: users[rnd.IntN(len(users))]}
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

// BenchmarkEvaluateTailnet compares a tailnet document with a mesh one
// that says the same: 10,000 nodes and the same 10,000 rules (logins, tags,
// groups, autogroups; no node names, which a tailnet document cannot have),
// the same random logins; the mesh document names the nodes by key in
// "nodes", the tailnet one gets them from Request.Caller and Request.Server.
// "mesh" and "tailnet" run each alone; "interleaved" alternates blocks of
// 64 requests of each (each first half the time), so that the load of a
// shared machine falls on both alike, and reports the two and their ratio.
func BenchmarkEvaluateTailnet(b *testing.B) {
	const n = 10000
	ids := tailnetNodes(n)
	users := []string{"root", "deploy", "u1", "u3", "u3-admin", "git", "x"}
	rnd := rand.New(rand.NewPCG(7, 8))
	pairs := make([][2]int, 4096)
	logins := make([]string, len(pairs))
	for i := range pairs {
		pairs[i] = [2]int{rnd.IntN(n), rnd.IntN(n)}
		logins[i] = users[rnd.IntN(len(users))]
	}
	at := time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC)
	setup := func(b *testing.B, o genOptions) (*Document, []Request) {
		doc, err := Parse([]byte(genDocFor(rand.New(rand.NewPCG(3, 4)), n, n, o)), "bench.hujson")
		if err != nil {
			b.Fatal(err)
		}
		doc.Now = func() time.Time { return at }
		reqs := make([]Request, len(pairs))
		for i, p := range pairs {
			reqs[i] = Request{Key: ids[p[0]].Key, Self: ids[p[1]].Key, User: logins[i]}
			if o.tailnet {
				reqs[i].Caller, reqs[i].Server = &ids[p[0]], &ids[p[1]]
			}
		}
		return doc, reqs
	}
	ctx := context.Background()
	mesh, meshReqs := setup(b, genOptions{byIdentity: true})
	tailnet, tailnetReqs := setup(b, genOptions{tailnet: true, byIdentity: true})
	for i := range meshReqs {
		m, err1 := mesh.Evaluate(ctx, meshReqs[i])
		t, err2 := tailnet.Evaluate(ctx, tailnetReqs[i])
		if err1 != nil || err2 != nil || m.Action != t.Action || m.Rule != t.Rule {
			b.Fatalf("request %d: mesh %v by %s (%v), tailnet %v by %s (%v): the documents should decide alike", i, m.Action, m.Rule, err1, t.Action, t.Rule, err2)
		}
	}
	for _, tc := range []struct {
		name string
		doc  *Document
		reqs []Request
	}{{"mesh", mesh, meshReqs}, {"tailnet", tailnet, tailnetReqs}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := tc.doc.Evaluate(ctx, tc.reqs[i%len(tc.reqs)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("interleaved", func(b *testing.B) {
		const block = 64
		var meshTime, tailnetTime time.Duration
		var evals int
		run := func(doc *Document, reqs []Request) time.Duration {
			t0 := time.Now()
			for _, r := range reqs {
				_, _ = doc.Evaluate(ctx, r)
			}
			return time.Since(t0)
		}
		for i := 0; b.Loop(); i++ {
			j := i * block % len(meshReqs)
			if i%2 == 0 { // each goes first half the time
				meshTime += run(mesh, meshReqs[j:j+block])
				tailnetTime += run(tailnet, tailnetReqs[j:j+block])
			} else {
				tailnetTime += run(tailnet, tailnetReqs[j:j+block])
				meshTime += run(mesh, meshReqs[j:j+block])
			}
			evals += block
		}
		b.ReportMetric(float64(meshTime.Nanoseconds())/float64(evals), "mesh-ns/req")
		b.ReportMetric(float64(tailnetTime.Nanoseconds())/float64(evals), "tailnet-ns/req")
		b.ReportMetric(float64(tailnetTime)/float64(meshTime), "tailnet/mesh")
	})
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
