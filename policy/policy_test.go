package policy

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/sshmesh/sshmesh/meshkey"
)

// testKey returns a distinct valid public key for i.
func testKey(i int) meshkey.Public {
	var k meshkey.Public
	k[0], k[1], k[2] = byte(i), byte(i>>8), 0x80|byte(i>>16) // distinct up to 2^23
	return k
}

// withKeys replaces KEY1..KEY9 with test keys.
func withKeys(doc string) string {
	for i := 9; i >= 1; i-- {
		doc = strings.ReplaceAll(doc, fmt.Sprintf("KEY%d", i), testKey(i).String())
	}
	return doc
}

func loadFull(t testing.TB) *Document {
	t.Helper()
	b, err := os.ReadFile("testdata/full.hujson")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := Parse([]byte(withKeys(string(b))), "full.hujson")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return doc
}

var (
	aliceLaptop = Identity{Key: testKey(1), Node: "alice-laptop", Owner: "alice@example.com"}
	aliceDesk   = Identity{Key: testKey(2), Node: "alice-desk", Owner: "alice@example.com"}
	bobLaptop   = Identity{Key: testKey(3), Node: "bob-laptop", Owner: "bob@example.com"}
	carolLaptop = Identity{Key: testKey(4), Node: "carol-laptop", Owner: "carol@example.com"}
	build1      = Identity{Key: testKey(5), Node: "build-1", Tags: []string{"tag:server"}}
	db1         = Identity{Key: testKey(6), Node: "db-1", Tags: []string{"tag:server", "tag:prod"}}
	ci          = Identity{Key: testKey(7), Node: "ci", Tags: []string{"tag:ci"}}
)

func TestEvaluate(t *testing.T) {
	doc := loadFull(t)
	june := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	expired := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) // ssh[1] expires at this instant
	prodClosed := Decision{Action: Reject, Message: "prod is read-only this week", Rule: "ssh[0]", RulePos: "full.hujson:24",
		Expires: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	opsOnServers := Decision{Action: Accept, Rule: "ssh[1]", RulePos: "full.hujson:27",
		AcceptEnv: []string{"LANG", "LC_*", "GIT_*"}, AgentForward: true,
		LocalForward: []string{"localhost:5432", "10.0.0.0/8:*", "[fd00::/8]:22"}, RemoteForward: []string{"*:8080"},
		Record: true, OnRecordingFailure: "fail-closed", SessionDuration: 8 * time.Hour,
		Expires: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	with := func(d Decision, caller Identity, local string) Decision {
		d.Caller, d.LocalUser = caller, local
		return d
	}
	tests := []struct {
		name     string
		src, dst Identity
		user     string
		at       time.Time
		want     Decision
	}{
		{"reject first: prod closed", aliceLaptop, db1, "deploy", june, with(prodClosed, aliceLaptop, "")},
		{"reject * users include root", bobLaptop, db1, "root", june, with(prodClosed, bobLaptop, "")},
		{"reject * users include bad names", ci, db1, "../etc", june, with(prodClosed, ci, "")},
		{"reject wins over a later accept", ci, db1, "deploy", june, with(prodClosed, ci, "")},
		{"group member via nested group", bobLaptop, build1, "deploy", june, with(opsOnServers, bobLaptop, "deploy")},
		{"group member direct", aliceDesk, build1, "www-data", june, with(opsOnServers, aliceDesk, "www-data")},
		{"nonroot never gives root", bobLaptop, build1, "root", june, Decision{Caller: bobLaptop}},
		{"root only where named, as check", aliceLaptop, build1, "root", june,
			Decision{Action: Check, LocalUser: "root", Rule: "ssh[2]", RulePos: "full.hujson:33", Caller: aliceLaptop, CheckPeriod: time.Hour}},
		{"owner selector covers all her nodes", aliceDesk, build1, "root", june,
			Decision{Action: Check, LocalUser: "root", Rule: "ssh[2]", RulePos: "full.hujson:33", Caller: aliceDesk, CheckPeriod: time.Hour}},
		{"expired rule no longer matches", bobLaptop, build1, "deploy", expired, Decision{Caller: bobLaptop}},
		{"expired: falls through to a later rule", aliceLaptop, build1, "root", expired,
			Decision{Action: Check, LocalUser: "root", Rule: "ssh[2]", RulePos: "full.hujson:33", Caller: aliceLaptop, CheckPeriod: time.Hour}},
		{"tag src", ci, build1, "deploy", expired,
			Decision{Action: Accept, LocalUser: "deploy", Rule: "ssh[3]", RulePos: "full.hujson:35", Caller: ci}},
		{"tag src, other user", ci, build1, "alice", june, Decision{Caller: ci}},
		{"tagged node is not a member", ci, ci, "deploy", june, Decision{Caller: ci}},
		{"self with =", aliceLaptop, aliceDesk, "alice", june,
			Decision{Action: Check, LocalUser: "alice", Rule: "ssh[4]", RulePos: "full.hujson:37", Caller: aliceLaptop, CheckPeriod: 12 * time.Hour}},
		{"self with template", aliceDesk, aliceLaptop, "alice-admin", june,
			Decision{Action: Check, LocalUser: "alice-admin", Rule: "ssh[4]", RulePos: "full.hujson:37", Caller: aliceDesk, CheckPeriod: 12 * time.Hour}},
		{"self: template for another person", aliceDesk, aliceLaptop, "bob-admin", june, Decision{Caller: aliceDesk}},
		{"self: = is the caller's localpart only", aliceDesk, aliceLaptop, "bob", june, Decision{Caller: aliceDesk}},
		{"self: not someone else's node", aliceLaptop, bobLaptop, "alice", june, Decision{Caller: aliceLaptop}},
		{"self: into the same node", carolLaptop, carolLaptop, "carol", june,
			Decision{Action: Check, LocalUser: "carol", Rule: "ssh[4]", RulePos: "full.hujson:37", Caller: carolLaptop, CheckPeriod: 12 * time.Hour}},
		{"first match: later * accept", carolLaptop, carolLaptop, "postgres", june,
			Decision{Action: Accept, LocalUser: "postgres", Rule: "ssh[5]", RulePos: "full.hujson:39", Caller: carolLaptop}},
		{"* in accept excludes root", carolLaptop, carolLaptop, "root", june, Decision{Caller: carolLaptop}},
		{"* in accept excludes bad names", carolLaptop, carolLaptop, "-oProxy", june, Decision{Caller: carolLaptop}},
		{"unknown caller", Identity{Key: testKey(99)}, build1, "deploy", june, Decision{Caller: Identity{Key: testKey(99)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc.Now = func() time.Time { return tt.at }
			got, err := doc.Evaluate(context.Background(), Request{Key: tt.src.Key, Self: tt.dst.Key, User: tt.user})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(Decision{}, "RuleID")); diff != "" { // RuleID: TestRuleID
				t.Errorf("Evaluate (-want +got):\n%s", diff)
			}
			// Explain, the rule-by-rule reading, must agree.
			if tt.src.Node != "" {
				e, err := doc.Explain(tt.src.Node, tt.dst.Node, tt.user)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(got, e.Decision, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("Explain disagrees with Evaluate (-evaluate +explain):\n%s", diff)
				}
			}
		})
	}
}

func TestEvaluateUnknownDst(t *testing.T) {
	doc := loadFull(t)
	_, err := doc.Evaluate(context.Background(), Request{Key: testKey(1), Self: testKey(99), User: "alice"})
	if err == nil || !strings.Contains(err.Error(), "not a node in the document") {
		t.Fatalf("err = %v, want the destination named as not in the document", err)
	}
}

func TestNode(t *testing.T) {
	doc := loadFull(t)
	got, ok := doc.Node(testKey(6))
	if diff := cmp.Diff(db1, got); !ok || diff != "" {
		t.Errorf("Node(db-1 key) = _, %v (-want +got):\n%s", ok, diff)
	}
	if _, ok := doc.Node(testKey(99)); ok {
		t.Error("Node(unknown key) found a node")
	}
	if n, r, tests := doc.Stats(); n != 7 || r != 6 || tests != 8 {
		t.Errorf("Stats() = %d, %d, %d; want 7, 6, 8", n, r, tests)
	}
}

func TestEvaluateNoAllocs(t *testing.T) {
	doc := loadFull(t)
	ctx := context.Background()
	reqs := []Request{
		{Key: aliceLaptop.Key, Self: build1.Key, User: "deploy"},
		{Key: aliceLaptop.Key, Self: aliceDesk.Key, User: "alice-admin"},
		{Key: ci.Key, Self: db1.Key, User: "root"},
		{Key: testKey(99), Self: db1.Key, User: "root"},
	}
	for _, r := range reqs {
		if n := testing.AllocsPerRun(100, func() { _, _ = doc.Evaluate(ctx, r) }); n != 0 {
			t.Errorf("Evaluate(%+v) allocates %v times", r, n)
		}
	}
}

// TestRootAccountByUID: a login name that is a root account on the host
// (Request.RootUser: uid 0 under another name, a toor-style alias) is root
// for every rule: *, autogroup:nonroot, = and templates never allow it; a
// rule that lists the name allows it; a reject "*" still refuses it.
func TestRootAccountByUID(t *testing.T) {
	doc := loadFull(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		r    Request
		want Action
	}{
		// ssh[1] allows ops autogroup:nonroot on build-1.
		{"nonroot, plain account", Request{Key: aliceLaptop.Key, Self: build1.Key, User: "toor"}, Accept},
		{"nonroot, uid 0", Request{Key: aliceLaptop.Key, Self: build1.Key, User: "toor", RootUser: true}, Reject},
		// ssh[5] allows carol "*" on her own nodes.
		{"*, uid 0", Request{Key: carolLaptop.Key, Self: carolLaptop.Key, User: "toor", RootUser: true}, Reject},
		// ssh[4] allows alice "=" and "{localpart}-admin" on her nodes.
		{"=, uid 0", Request{Key: aliceDesk.Key, Self: aliceLaptop.Key, User: "alice", RootUser: true}, Reject},
		{"template, uid 0", Request{Key: aliceDesk.Key, Self: aliceLaptop.Key, User: "alice-admin", RootUser: true}, Reject},
		{"template, plain account", Request{Key: aliceDesk.Key, Self: aliceLaptop.Key, User: "alice-admin"}, Check},
		// ssh[3] names deploy explicitly: an explicit name allows a root account.
		{"named, uid 0", Request{Key: ci.Key, Self: build1.Key, User: "deploy", RootUser: true}, Accept},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := doc.Evaluate(ctx, tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if d.Action != tc.want {
				t.Errorf("Evaluate(%s as %s, root %v) = %v by %q, want %v", tc.r.Key.Short(), tc.r.User, tc.r.RootUser, d.Action, d.Rule, tc.want)
			}
		})
	}
}

// TestRuleID: a rule's RuleID follows what it says: moving it, reformatting
// it, reordering its keys or adding comments keep it; changing it makes a
// new one.
func TestRuleID(t *testing.T) {
	const nodes = `"nodes": {"laptop": {"key": "KEY1", "owner": "ann@example.com"}, "srv": {"key": "KEY2", "tags": ["tag:server"]}},
		"tagOwners": {"tag:server": ["ann@example.com"]},`
	idOf := func(rules string) string {
		t.Helper()
		doc, err := Parse([]byte(withKeys("{"+nodes+`"ssh": [`+rules+"]}")), "p.hujson")
		if err != nil {
			t.Fatal(err)
		}
		d, err := doc.Evaluate(context.Background(), Request{Key: testKey(1), Self: testKey(2), User: "deploy"})
		if err != nil {
			t.Fatal(err)
		}
		if d.Action != Check || d.RuleID == "" {
			t.Fatalf("decision %+v: want a check with a RuleID", d)
		}
		return d.RuleID
	}
	const check = `{"action": "check", "src": ["laptop"], "dst": ["tag:server"], "users": ["deploy"], "checkPeriod": "1h"}`
	const other = `{"action": "accept", "src": ["laptop"], "dst": ["tag:server"], "users": ["ops"]}`
	base := idOf(check)
	for _, tc := range []struct {
		name  string
		rules string
		same  bool
	}{
		{"moved down", other + "," + check, true},
		{"reformatted, keys reordered, commented", `// the check
			{"users": ["deploy"],   "checkPeriod": "1h", "dst": ["tag:server"], "src": ["laptop"], "action": "check",}`, true},
		{"users changed", `{"action": "check", "src": ["laptop"], "dst": ["tag:server"], "users": ["deploy", "ops"], "checkPeriod": "1h"}`, false},
		{"period changed", `{"action": "check", "src": ["laptop"], "dst": ["tag:server"], "users": ["deploy"], "checkPeriod": "8h"}`, false},
		{"proof changed", `{"action": "check", "src": ["laptop"], "dst": ["tag:server"], "users": ["deploy"], "checkPeriod": "1h", "checkProof": "mesh"}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := idOf(tc.rules); (got == base) != tc.same {
				t.Errorf("RuleID %s vs %s: same = %v, want %v", got, base, got == base, tc.same)
			}
		})
	}
}

// TestCheckProof: a check rule asks for a passkey unless it says
// "checkProof": "mesh".
func TestCheckProof(t *testing.T) {
	const nodes = `"nodes": {"laptop": {"key": "KEY1", "owner": "ann@example.com"}, "srv": {"key": "KEY2", "tags": ["tag:server"]}},
		"tagOwners": {"tag:server": ["ann@example.com"]},`
	for _, tc := range []struct{ extra, want string }{{"", ""}, {`, "checkProof": "passkey"`, CheckProofPasskey}, {`, "checkProof": "mesh"`, CheckProofMesh}} {
		doc, err := Parse([]byte(withKeys("{"+nodes+`"ssh": [{"action": "check", "src": ["laptop"], "dst": ["tag:server"], "users": ["deploy"]`+tc.extra+`}]}`)), "p.hujson")
		if err != nil {
			t.Fatal(err)
		}
		d, err := doc.Evaluate(context.Background(), Request{Key: testKey(1), Self: testKey(2), User: "deploy"})
		if err != nil || d.Action != Check || d.CheckProof != tc.want {
			t.Errorf("%q: %+v %v; want a check with CheckProof %q", tc.extra, d, err, tc.want)
		}
	}
}

// addrTable stands in for a mesh node's WhoIs (netstack's is tested with
// real nodes there): it names the peer of each listed address.
type addrTable map[string]meshkey.Public

func (t addrTable) WhoIs(a string) (meshkey.Public, bool) { k, ok := t[a]; return k, ok }

// TestWhoIs: one call names the caller of an address: the document's node,
// the key alone for a peer the document does not name, nothing for an
// address no peer owns.
func TestWhoIs(t *testing.T) {
	doc := loadFull(t)
	peers := addrTable{"100.64.0.2:40000": aliceLaptop.Key, "100.64.0.9:1": testKey(99)}
	for _, tc := range []struct {
		addr string
		want Identity
		ok   bool
	}{
		{"100.64.0.2:40000", aliceLaptop, true},
		{"100.64.0.9:1", Identity{Key: testKey(99)}, true},
		{"100.64.0.7:1", Identity{}, false},
	} {
		got, ok := WhoIs(peers, doc, tc.addr)
		if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" || ok != tc.ok {
			t.Errorf("WhoIs(%s) = %v (-want +got):\n%s", tc.addr, ok, diff)
		}
	}
}
