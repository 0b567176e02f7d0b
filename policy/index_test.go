package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// refDecide is the reference the index is held to: the rules read one by
// one, top to bottom, from what each says as written (selectors, login
// names and patterns, expiry), sharing no code with match or Explain. It
// returns the index of the first rule that decides a login from src into
// dst as user (root: a root account), or -1.
func refDecide(doc *Document, src, dst Identity, user string, root bool, now time.Time) int {
	srcOwner, dstOwner := refOwner(src), refOwner(dst)
	for i := range doc.rules {
		r := &doc.rules[i]
		srcOK := slices.ContainsFunc(r.src, func(sel string) bool {
			switch {
			case sel == "*":
				return true
			case sel == "autogroup:member":
				return srcOwner != ""
			case sel == "autogroup:tagged":
				return len(src.Tags) > 0
			case strings.HasPrefix(sel, "group:"):
				return srcOwner != "" && slices.Contains(doc.groups[sel], srcOwner)
			case strings.HasPrefix(sel, "tag:"):
				return slices.Contains(src.Tags, sel)
			case strings.Contains(sel, "@"):
				return srcOwner == sel
			}
			return src.Node != "" && src.Node == sel
		})
		dstOK := slices.ContainsFunc(r.dst, func(sel string) bool {
			switch {
			case sel == "*":
				return true
			case sel == "autogroup:self":
				return srcOwner != "" && srcOwner == dstOwner
			case strings.HasPrefix(sel, "tag:"):
				return slices.Contains(dst.Tags, sel)
			case strings.Contains(sel, "@"):
				return dstOwner == sel
			}
			return dst.Node != "" && dst.Node == sel
		})
		reach := len(dst.Tags) > 0 || srcOwner != "" && srcOwner == dstOwner
		switch {
		case !srcOK || !dstOK:
		case r.action != Reject && !reach:
		case !r.expires.IsZero() && !now.Before(r.expires):
		case refUsers(r.users.text, user, root, srcOwner, r.action == Reject):
			return i
		}
	}
	return -1
}

// refOwner is the owner a rule sees: none for a tagged node, else the login
// in lower case (ASCII).
func refOwner(id Identity) string {
	if len(id.Tags) > 0 {
		return ""
	}
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, id.Owner)
}

// refUsers says whether a rule's "users", as written, let the caller of
// owner in as user, as the package doc words it.
func refUsers(list []string, user string, root bool, owner string, reject bool) bool {
	if reject && slices.Contains(list, "*") {
		return true // every name, root and malformed ones included
	}
	if !validUser(user) {
		return false
	}
	if slices.Contains(list, user) {
		return true // named explicitly, root or not
	}
	if root {
		return false
	}
	if slices.Contains(list, "*") || slices.Contains(list, "autogroup:nonroot") {
		return true
	}
	localpart, _, _ := strings.Cut(owner, "@")
	if owner == "" {
		return false
	}
	for _, u := range list {
		if u == "=" && user == localpart || strings.Contains(u, "{localpart}") && strings.Replace(u, "{localpart}", localpart, 1) == user {
			return true
		}
	}
	return false
}

// refDecision is the Decision refDecide's rule makes.
func refDecision(doc *Document, ri int, caller Identity, user string) Decision {
	if ri < 0 {
		return Decision{Caller: caller}
	}
	r := doc.rules[ri]
	d := r.dec
	d.Caller = caller
	if r.action != Reject {
		d.LocalUser = user
	}
	return d
}

// withExtraRules adds, ahead of a generated document's rules or behind
// them, reject rules reaching any node (by name, * or a tag) and rules with
// several selectors of each kind, so that lists of every length and every
// side of match's choice are walked.
func withExtraRules(rnd *rand.Rand, doc string, n int, tailnet bool) string {
	var b strings.Builder
	people, tags := max(1, n*4/5/2), max(1, n/50)
	for range rnd.IntN(12) {
		var dst string
		switch k := rnd.IntN(4); {
		case k == 0:
			dst = `"*"`
		case k == 1 && !tailnet:
			dst = fmt.Sprintf("%q", fmt.Sprint("n", rnd.IntN(n)))
		case k == 1:
			dst = fmt.Sprintf(`"u%d@example.com"`, rnd.IntN(people))
		default:
			dst = fmt.Sprintf(`"tag:t%d", "tag:t%d"`, rnd.IntN(tags), rnd.IntN(tags))
		}
		users := []string{`"*"`, `"root"`, `"root", "deploy"`, `"="`, `"autogroup:nonroot"`}[rnd.IntN(5)]
		fmt.Fprintf(&b, `{"action": "reject", "src": ["*", "u%d@example.com", "autogroup:member", "tag:t%d"], "dst": [%s], "users": [%s]`,
			rnd.IntN(people), rnd.IntN(tags), dst, users)
		if rnd.IntN(3) == 0 {
			fmt.Fprintf(&b, `, "expires": "2026-0%d-15T12:00:00.5Z"`, 1+rnd.IntN(9))
		}
		b.WriteString("},\n")
	}
	i := strings.LastIndex(doc, "],\n}")
	if rnd.IntN(2) == 0 {
		return doc[:i] + b.String() + doc[i:]
	}
	j := strings.Index(doc, `"ssh": [`) + len(`"ssh": [`) + 1
	return doc[:j] + b.String() + doc[j:]
}

// TestIndexMatchesReference: on many random documents (mesh and tailnet,
// a handful to hundreds of nodes and rules, expiring rules, rejects into
// any node), Evaluate with its index decides every sampled login exactly
// as refDecide's plain scan of the rules does: the same rule, the same
// decision, whatever side match walks.
func TestIndexMatchesReference(t *testing.T) {
	rnd := rand.New(rand.NewPCG(11, 12))
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	for round := range rounds {
		checkIndexRound(t, rnd, round)
	}
}

// checkIndexRound generates one document and checks a few hundred logins.
func checkIndexRound(t *testing.T, rnd *rand.Rand, round int) {
	t.Helper()
	tailnet := rnd.IntN(3) == 0
	n, r := 3+rnd.IntN(60), 1+rnd.IntN(120)
	if rnd.IntN(6) == 0 {
		n, r = 100+rnd.IntN(300), 100+rnd.IntN(200)
	}
	var src string
	if tailnet {
		src = withExtraRules(rnd, genTailnetDoc(rnd, n, r), n, true)
	} else {
		src = withExtraRules(rnd, genDoc(rnd, n, r), n, false)
	}
	doc, err := Parse([]byte(src), "gen.hujson")
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	at := time.Date(2026, time.Month(1+rnd.IntN(12)), 1+rnd.IntN(28), rnd.IntN(24), 0, 0, rnd.IntN(2)*500_000_000, time.UTC)
	switch month := time.Month(1 + rnd.IntN(9)); rnd.IntN(3) {
	case 0: // the very instant some rules expire at
		at = time.Date(2026, month, 1, 0, 0, 0, 0, time.UTC)
	case 1:
		at = time.Date(2026, month, 15, 12, 0, 0, 500_000_000, time.UTC)
	}
	doc.Now = func() time.Time { return at }
	var ids []Identity
	if tailnet {
		ids = tailnetNodes(n)
		ids = append(ids,
			Identity{Tags: []string{"tag:t0", "tag:t1"}},
			Identity{Owner: "nobody@example.com"},
			Identity{Owner: "U1@Example.COM"},
			Identity{Owner: "u1@example.com", Tags: []string{"tag:t0"}},
			Identity{Tags: []string{"tag:none", "*"}})
	} else {
		ids = doc.Nodes()
	}
	users := []string{"root", "deploy", "u1", "u3", "u3-admin", "git", "x", "../x", "", "toor"}
	for range 400 {
		s, d := ids[rnd.IntN(len(ids))], ids[rnd.IntN(len(ids))]
		user := users[rnd.IntN(len(users))]
		rootUser := user == "toor" && rnd.IntN(2) == 0
		req := Request{Key: s.Key, Self: d.Key, User: user, RootUser: rootUser}
		caller := s
		if tailnet {
			sc, dc := Identity{Owner: s.Owner, Tags: s.Tags}, Identity{Owner: d.Owner, Tags: d.Tags}
			req.Caller, req.Server, caller = &sc, &dc, sc
		}
		got, err := doc.Evaluate(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		ri := refDecide(doc, s, d, user, user == "root" || rootUser, at)
		want := refDecision(doc, ri, caller, user)
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round %d (%d nodes, %d rules, tailnet %v): %s → %s as %q (root account %v) at %s: the index disagrees with the reference (-reference +evaluate):\n%s",
				round, n, len(doc.rules), tailnet, label(s), label(d), user, rootUser, at.Format(time.RFC3339Nano), diff)
		}
	}
}

// FuzzIndex: TestIndexMatchesReference on documents and logins drawn from
// the fuzzer's seeds.
func FuzzIndex(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Add(uint64(7), uint64(99))
	f.Fuzz(func(t *testing.T, a, b uint64) {
		checkIndexRound(t, rand.New(rand.NewPCG(a, b)), 0)
	})
}

// TestKeyIndex: every node is found by its key, a key no node has is not,
// and keys that share their first bytes (as testKey's do) still find their
// own node.
func TestKeyIndex(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 100, 5000} {
		nodes := make([]nodeRec, n)
		for i := range nodes {
			nodes[i].key = testKey(i + 1)
		}
		x := newKeyIndex(0) // grown as keys are added
		for i := range nodes {
			x.add(nodes, int32(i))
		}
		for i := range nodes {
			if got, ok := x.find(nodes, testKey(i+1)); !ok || got != int32(i) {
				t.Fatalf("%d nodes: key %d found at %d, %v", n, i+1, got, ok)
			}
		}
		for _, k := range []int{n + 1, n + 2, 1 << 20} {
			if got, ok := x.find(nodes, testKey(k)); ok {
				t.Fatalf("%d nodes: absent key %d found at %d", n, k, got)
			}
		}
		for i := range 2 * n {
			a, b := 1+i%(n+3), 1+(i*7)%(n+3) // the last three are absent
			ia, okA, ib, okB := x.find2(nodes, testKey(a), testKey(b))
			if okA != (a <= n) || okA && ia != int32(a-1) || okB != (b <= n) || okB && ib != int32(b-1) {
				t.Fatalf("%d nodes: find2(key %d, key %d) = %d, %v, %d, %v", n, a, b, ia, okA, ib, okB)
			}
		}
	}
}
