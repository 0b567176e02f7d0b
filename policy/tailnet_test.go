package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func loadTailnet(t testing.TB) *Document {
	t.Helper()
	b, err := os.ReadFile("testdata/tailnet.hujson")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := Parse(b, "tailnet.hujson")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return doc
}

// Tailnet identities as a coordinator's WhoIs would give them.
var (
	tnAlice     = Identity{Key: testKey(11), Node: "alice-laptop", Owner: "alice@example.com"}
	tnAliceDesk = Identity{Key: testKey(12), Node: "alice-desk", Owner: "Alice@Example.com"} // case as the coordinator spells it
	tnBob       = Identity{Key: testKey(13), Node: "bob-laptop", Owner: "bob@example.com"}
	tnCarol     = Identity{Key: testKey(14), Node: "carol-laptop", Owner: "carol@example.com"}
	tnBuild1    = Identity{Key: testKey(15), Node: "build-1", Tags: []string{"tag:server"}}
	tnDB1       = Identity{Key: testKey(16), Node: "db-1", Tags: []string{"tag:server", "tag:prod"}}
	tnCI        = Identity{Key: testKey(17), Node: "ci", Tags: []string{"tag:ci"}}
	// A tagged node that the coordinator still reports with the user who
	// tagged it (headscale does): it belongs to no one.
	tnCIOfCarol  = Identity{Key: testKey(18), Node: "ci-2", Owner: "carol@example.com", Tags: []string{"tag:ci"}}
	tnCarolsSrv  = Identity{Key: testKey(19), Node: "carol-srv", Owner: "carol@example.com", Tags: []string{"tag:server"}}
	tnNoOneAtAll = Identity{Key: testKey(20), Node: "stray"}
)

// tailnetForm is how tests and Explain name id: its tags, or its login.
func tailnetForm(id Identity) string {
	if len(id.Tags) > 0 {
		return strings.Join(id.Tags, ",")
	}
	return id.Owner
}

func TestTailnetEvaluate(t *testing.T) {
	doc := loadTailnet(t)
	if got := doc.IdentitySource(); got != "tailnet" {
		t.Fatalf("IdentitySource() = %q, want tailnet", got)
	}
	june := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	expired := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) // ssh[1] expires at this instant
	prodClosed := Decision{Action: Reject, Message: "prod is read-only this week", Rule: "ssh[0]", RulePos: "tailnet.hujson:17",
		Expires: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	opsOnServers := Decision{Action: Accept, Rule: "ssh[1]", RulePos: "tailnet.hujson:20",
		AcceptEnv: []string{"LANG", "LC_*", "GIT_*"}, AgentForward: true,
		LocalForward: []string{"localhost:5432", "10.0.0.0/8:*", "[fd00::/8]:22"}, RemoteForward: []string{"*:8080"},
		Record: true, OnRecordingFailure: "fail-closed", SessionDuration: 8 * time.Hour,
		Expires: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	rootCheck := Decision{Action: Check, Rule: "ssh[2]", RulePos: "tailnet.hujson:26", CheckPeriod: time.Hour}
	ciDeploy := Decision{Action: Accept, Rule: "ssh[3]", RulePos: "tailnet.hujson:28"}
	selfCheck := Decision{Action: Check, Rule: "ssh[4]", RulePos: "tailnet.hujson:30", CheckPeriod: 12 * time.Hour}
	carolByLogin := Decision{Action: Accept, Rule: "ssh[5]", RulePos: "tailnet.hujson:32"}
	taggedStop := Decision{Action: Reject, Rule: "ssh[6]", RulePos: "tailnet.hujson:34", Message: "tagged nodes deploy only"}
	with := func(d Decision, caller Identity, local string) Decision {
		d.Caller, d.LocalUser = caller, local
		return d
	}
	none := func(caller Identity) Decision { return Decision{Caller: caller} }
	tests := []struct {
		name     string
		src, dst Identity
		user     string
		root     bool
		at       time.Time
		want     Decision
	}{
		{"reject first: prod closed", tnAlice, tnDB1, "deploy", false, june, with(prodClosed, tnAlice, "")},
		{"group member via nested group, by tag", tnBob, tnBuild1, "deploy", false, june, with(opsOnServers, tnBob, "deploy")},
		{"login src, root named, check", tnAlice, tnBuild1, "root", false, june, with(rootCheck, tnAlice, "root")},
		{"login compared ignoring case", tnAliceDesk, tnBuild1, "root", false, june, with(rootCheck, tnAliceDesk, "root")},
		{"nonroot never gives root", tnBob, tnBuild1, "root", false, june, none(tnBob)},
		{"expired rule no longer matches", tnBob, tnBuild1, "deploy", false, expired, none(tnBob)},
		{"tag src", tnCI, tnBuild1, "deploy", false, june, with(ciDeploy, tnCI, "deploy")},
		{"tag src, other user", tnCI, tnBuild1, "ci", false, june, with(taggedStop, tnCI, "")},
		{"autogroup:tagged, reject with dst *", tnCI, tnAlice, "deploy", false, june, with(taggedStop, tnCI, "")},
		{"self with =, owner case ignored", tnAliceDesk, tnAlice, "alice", false, june, with(selfCheck, tnAliceDesk, "alice")},
		{"self with template", tnAlice, tnAliceDesk, "alice-admin", false, june, with(selfCheck, tnAlice, "alice-admin")},
		{"self: = is the caller's localpart only", tnAlice, tnAliceDesk, "bob", false, june, none(tnAlice)},
		{"self: not someone else's node", tnAlice, tnBob, "alice", false, june, none(tnAlice)},
		{"self: not someone else's node, as them", tnAlice, tnBob, "bob", false, june, none(tnAlice)},
		{"dst login: the owner's own node", tnCarol, tnCarol, "www", false, june, with(carolByLogin, tnCarol, "www")},
		{"dst login: * excludes root", tnCarol, tnCarol, "root", false, june, none(tnCarol)},
		{"dst login: * excludes uid 0", tnCarol, tnCarol, "toor", true, june, none(tnCarol)},
		{"dst login: not for others", tnBob, tnCarol, "www", false, june, none(tnBob)},
		{"tagged caller with a user is not a member and has no =", tnCIOfCarol, tnCarol, "carol", false, june, with(taggedStop, tnCIOfCarol, "")},
		{"tagged caller with a user is not that user", tnCIOfCarol, tnCarol, "www", false, june, with(taggedStop, tnCIOfCarol, "")},
		{"tagged server with a user is not that user's", tnCarol, tnCarolsSrv, "www", false, june, none(tnCarol)},
		{"tagged server with a user is a tagged server", tnCI, tnCarolsSrv, "deploy", false, june, with(ciDeploy, tnCI, "deploy")},
		{"a server with no owner and no tags is no one's", tnAlice, tnNoOneAtAll, "alice", false, june, none(tnAlice)},
		{"a caller with no owner and no tags matches only *", tnNoOneAtAll, tnBuild1, "deploy", false, june, none(tnNoOneAtAll)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc.Now = func() time.Time { return tt.at }
			src, dst := tt.src, tt.dst
			r := Request{Key: src.Key, Self: dst.Key, User: tt.user, RootUser: tt.root, Caller: &src, Server: &dst}
			got, err := doc.Evaluate(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(Decision{}, "RuleID")); diff != "" {
				t.Errorf("Evaluate (-want +got):\n%s", diff)
			}
			if tt.want.Rule != "" && got.RuleID == "" {
				t.Errorf("no RuleID")
			}
			// Explain, the rule-by-rule reading, must agree (it knows the
			// caller by login or tags only).
			if tt.root || tailnetForm(src) == "" || tailnetForm(dst) == "" {
				return
			}
			e, err := doc.Explain(tailnetForm(src), tailnetForm(dst), tt.user)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, e.Decision, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(Decision{}, "Caller")); diff != "" {
				t.Errorf("Explain disagrees with Evaluate (-evaluate +explain):\n%s\n%s", diff, e)
			}
		})
	}
}

// TestTailnetNeedsIdentities: a tailnet document refuses to decide without
// the coordinator's identities; a mesh document ignores them.
func TestTailnetNeedsIdentities(t *testing.T) {
	doc := loadTailnet(t)
	ctx := context.Background()
	for _, r := range []Request{
		{Key: tnAlice.Key, Self: tnBuild1.Key, User: "deploy"},
		{Key: tnAlice.Key, Self: tnBuild1.Key, User: "deploy", Caller: &tnAlice},
		{Key: tnAlice.Key, Self: tnBuild1.Key, User: "deploy", Server: &tnBuild1},
	} {
		d, err := doc.Evaluate(ctx, r)
		if err == nil || !strings.Contains(err.Error(), "needs the caller's and the server's identities from a tailnet") {
			t.Errorf("Evaluate(Caller %v, Server %v) error = %v, want one saying it needs identities from a tailnet", r.Caller, r.Server, err)
		}
		if d.Allowed() {
			t.Errorf("Evaluate without identities allowed: %+v", d)
		}
	}

	mesh := loadFull(t)
	if got := mesh.IdentitySource(); got != "mesh" {
		t.Errorf("IdentitySource() = %q, want mesh", got)
	}
	// A mesh document decides on the keys: a Caller claiming to be in
	// group:ops from an unknown key gets nothing, and bob's key is bob
	// whatever Caller says.
	for _, tc := range []struct {
		r    Request
		want Action
	}{
		{Request{Key: testKey(99), Self: build1.Key, User: "deploy", Caller: &tnAlice, Server: &tnBuild1}, Reject},
		{Request{Key: bobLaptop.Key, Self: build1.Key, User: "deploy", Caller: &tnCI, Server: &tnDB1}, Accept},
	} {
		mesh.Now = func() time.Time { return time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) }
		d, err := mesh.Evaluate(ctx, tc.r)
		if err != nil || d.Action != tc.want {
			t.Errorf("mesh Evaluate(%s) = %v, %v; want %v", tc.r.Key.Short(), d.Action, err, tc.want)
		}
		if d.Caller.Key != tc.r.Key {
			t.Errorf("mesh Decision.Caller = %+v, want the key's node", d.Caller)
		}
	}
}

// TestTailnetReachAtEvaluation: the safety rule holds at evaluation even
// if a rule that slipped past it at load (here forced in by hand) would
// let someone into another person's untagged node: only a reject rule may
// match there. Explain says so.
func TestTailnetReachAtEvaluation(t *testing.T) {
	doc, err := Parse([]byte(`{
  "identity": "tailnet",
  "ssh": [
    {"action": "reject", "src": ["*"], "dst": ["*"], "users": ["*"]},
  ],
}`), "p.hujson")
	if err != nil {
		t.Fatal(err)
	}
	// What the load-time rule would refuse, in the rule and in what match
	// reads of it.
	doc.rules[0].action, doc.rules[0].dec.Action, doc.hot[0].action = Accept, Accept, Accept
	for _, tc := range []struct {
		src, dst Identity
		want     Action
	}{
		{tnAlice, tnBob, Reject},
		{tnCI, tnBob, Reject},
		{tnAlice, tnNoOneAtAll, Reject},
		{tnAlice, tnAliceDesk, Accept},
		{tnAlice, tnBuild1, Accept},
	} {
		d, err := doc.Evaluate(context.Background(), Request{User: "deploy", Caller: &tc.src, Server: &tc.dst})
		if err != nil || d.Action != tc.want {
			t.Errorf("%s → %s: %v, %v; want %v", tc.src.Node, tc.dst.Node, d.Action, err, tc.want)
		}
	}
	e, err := doc.Explain("alice@example.com", "bob@example.com", "deploy")
	if err != nil {
		t.Fatal(err)
	}
	if want := "a node of bob@example.com is an untagged node of bob@example.com, not the caller's"; e.Decision.Allowed() || !strings.Contains(e.String(), want) {
		t.Errorf("Explain:\n%s\nwant a reject saying %q", e, want)
	}
}

func TestTailnetEvaluateNoAllocs(t *testing.T) {
	doc := loadTailnet(t)
	ctx := context.Background()
	for _, tc := range []struct {
		r      Request
		allocs float64
	}{
		{Request{User: "deploy", Caller: &tnAlice, Server: &tnBuild1}, 0},
		{Request{User: "alice", Caller: &tnAlice, Server: &tnAlice}, 0},
		{Request{User: "root", Caller: &tnCI, Server: &tnDB1}, 0},
		{Request{User: "x", Caller: &tnNoOneAtAll, Server: &tnCarol}, 0},
		{Request{User: "carol", Caller: &tnCIOfCarol, Server: &tnCarol}, 0},
		// A login with capitals is lowercased, once per identity.
		{Request{User: "alice-admin", Caller: &tnAlice, Server: &tnAliceDesk}, 1},
	} {
		if n := testing.AllocsPerRun(100, func() { _, _ = doc.Evaluate(ctx, tc.r) }); n > tc.allocs {
			t.Errorf("Evaluate(%s → %s as %s) allocates %v times, want at most %v", tc.r.Caller.Node, tc.r.Server.Node, tc.r.User, n, tc.allocs)
		}
	}
}

func TestTailnetStats(t *testing.T) {
	doc := loadTailnet(t)
	if n, r, tests := doc.Stats(); n != 0 || r != 7 || tests != 16 {
		t.Errorf("Stats() = %d, %d, %d; want 0, 7, 16", n, r, tests)
	}
	if _, ok := doc.Node(testKey(11)); ok {
		t.Error("a tailnet document names a node by key")
	}
}

// tailnetBase is a valid tailnet document; each bad case edits one spot.
const tailnetBase = `{
  "identity": "tailnet",
  "groups": {"group:ops": ["ann@example.com"], "group:two": ["ann@example.com", "bob@example.com"]},
  "tagOwners": {"tag:server": ["group:ops"]},
  "ssh": [
    {"action": "accept", "src": ["group:ops"], "dst": ["tag:server"], "users": ["autogroup:nonroot"]},
  ],
  "tests": [{"src": "ann@example.com", "dst": "tag:server", "accept": ["deploy"], "deny": ["root"]}],
}`

func TestTailnetParseErrors(t *testing.T) {
	if _, err := Parse([]byte(tailnetBase), "bad.hujson"); err != nil {
		t.Fatalf("the base document is bad: %v", err)
	}
	tests := []struct {
		name     string
		old, new string // edit tailnetBase: replace old with new
		at       string // the error points at the first occurrence of this in the edited document
		want     string // field: problem
	}{
		{"unknown identity source", `"identity": "tailnet"`, `"identity": "tailscale"`, `"tailscale"`, `identity: "tailscale" is not mesh (the document's own "nodes") or tailnet`},
		{"identity not a string", `"identity": "tailnet"`, `"identity": true`, `true`, `identity: want a string, got a boolean`},
		{"nodes in a tailnet document", `"groups":`, `"nodes": {}, "groups":`, `"nodes"`, `nodes: a tailnet document has no "nodes"`},
		{"node name in src", `"src": ["group:ops"]`, `"src": ["laptop"]`, `"laptop"`, `ssh[0].src[0]: "laptop" is not a login (user@domain), group:, tag:, autogroup:member, autogroup:tagged or *: a tailnet document names no nodes`},
		{"node name in dst", `"dst": ["tag:server"]`, `"dst": ["build-1"]`, `"build-1"`, `ssh[0].dst[0]: "build-1" is not tag:, a login (user@domain), autogroup:self or *`},
		{"bad login in src", `"src": ["group:ops"]`, `"src": ["ann@"]`, `"ann@"`, `ssh[0].src[0]: "ann@" is not an email address`},
		{"bad login in dst", `"src": ["group:ops"], "dst": ["tag:server"]`, `"src": ["ann@example.com"], "dst": ["ann@@x"]`, `"ann@@x"`, `ssh[0].dst[0]: "ann@@x" is not an email address`},
		{"group in dst", `"dst": ["tag:server"]`, `"dst": ["group:ops"]`, `"group:ops"], "users"`, `ssh[0].dst[0]: dst names servers, not groups`},
		{"unknown autogroup in src", `"src": ["group:ops"]`, `"src": ["autogroup:admin"]`, `"autogroup:admin"`, `ssh[0].src[0]: unknown autogroup "autogroup:admin" (src takes autogroup:member or autogroup:tagged)`},
		{"undefined tag", `"dst": ["tag:server"]`, `"dst": ["tag:web"]`, `"tag:web"`, `ssh[0].dst[0]: undefined tag "tag:web"`},
		{"safety: dst *", `"dst": ["tag:server"]`, `"dst": ["*"]`, `["*"]`, `ssh[0].dst: accept rule with dst * would let group:ops into every person's untagged nodes`},
		{"safety: dst * in a check rule", `"action": "accept", "src": ["group:ops"], "dst": ["tag:server"]`, `"action": "check", "src": ["ann@example.com"], "dst": ["*"]`, `["*"]`, `ssh[0].dst: check rule with dst * would let ann@example.com into every person's untagged nodes`},
		{"safety: someone else's login", `"src": ["group:ops"], "dst": ["tag:server"]`, `"src": ["bob@example.com"], "dst": ["ann@example.com"]`, `["ann@example.com"], "users"`, `ssh[0].dst: accept rule would let bob@example.com into ann@example.com, the untagged nodes of ann@example.com`},
		{"safety: a group with someone else", `"src": ["group:ops"], "dst": ["tag:server"]`, `"src": ["group:two"], "dst": ["ann@example.com"]`, `["ann@example.com"], "users"`, `ssh[0].dst: accept rule would let group:two into ann@example.com`},
		{"safety: a tag into a person's nodes", `"src": ["group:ops"], "dst": ["tag:server"]`, `"src": ["tag:server"], "dst": ["ann@example.com"]`, `["ann@example.com"], "users"`, `ssh[0].dst: accept rule would let tag:server into ann@example.com`},
		{"safety: autogroup:member into a person's nodes", `"src": ["group:ops"], "dst": ["tag:server"]`, `"src": ["autogroup:member"], "dst": ["ann@example.com"]`, `["ann@example.com"], "users"`, `ssh[0].dst: accept rule would let autogroup:member into ann@example.com`},
		{"safety: * into a person's nodes", `"src": ["group:ops"], "dst": ["tag:server"]`, `"src": ["ann@example.com", "*"], "dst": ["tag:server", "ANN@example.com"]`, `["tag:server", "ANN`, `ssh[0].dst: accept rule would let * into ann@example.com`},
		{"test names a node", `"src": "ann@example.com", "dst": "tag:server"`, `"src": "ann@example.com", "dst": "build-1"`, `"build-1"`, `tests[0].dst: "build-1" is not a login (user@domain) or tags (tag:a or tag:a,tag:b) (tests in a tailnet document name a login or tags)`},
		{"test names an undefined tag", `"dst": "tag:server"`, `"dst": "tag:server,tag:web"`, `"tag:server,tag:web"`, `tests[0].dst: undefined tag "tag:web"`},
		{"test names a tag twice", `"dst": "tag:server"`, `"dst": "tag:server, tag:server"`, `"tag:server, tag:server"`, `tests[0].dst: duplicate tag "tag:server"`},
		{"test names a bad tag", `"dst": "tag:server"`, `"dst": "tag:server,web"`, `"tag:server,web"`, `tests[0].dst: "web" is not a tag (tag:NAME)`},
		{"failing test", `"deny": ["root"]`, `"deny": ["deploy"]`, `"deploy"]}]`, `tests[0]: ann@example.com → tag:server as deploy: want deny, got accept by ssh[0] (line 6)`},
		{"failing test, another person", `"src": "ann@example.com"`, `"src": "bob@example.com"`, `"deploy"]`, `tests[0]: bob@example.com → tag:server as deploy: want accept, got deny (no rule matched)`},
		{"failing test, tagged caller is no member", `"src": ["group:ops"]`, `"src": ["autogroup:member"]`, `"deploy"]`, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(tailnetBase, tt.old) {
				t.Fatalf("%q is not in the base document", tt.old)
			}
			doc := strings.Replace(tailnetBase, tt.old, tt.new, 1)
			at := strings.Index(doc, tt.at)
			if at < 0 {
				t.Fatalf("%q is not in the edited document", tt.at)
			}
			line, col := newLines([]byte(doc)).at(at)
			want := fmt.Sprintf("bad.hujson:%d:%d: %s", line, col, tt.want)
			_, err := Parse([]byte(doc), "bad.hujson")
			if tt.want == "" { // the edit is fine
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded, want %s", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Parse error:\n%v\nwant it to contain:\n%s", err, want)
			}
			var perr *Error
			if !errors.As(err, &perr) {
				t.Errorf("error is not a *policy.Error: %T", err)
			}
		})
	}
}

// TestTailnetSafetyAllows: what the tailnet safety rule lets through at
// load: tags, autogroup:self, a login from itself or from groups of it
// alone, and any destination in a reject rule.
func TestTailnetSafetyAllows(t *testing.T) {
	for _, rule := range []string{
		`{"action": "accept", "src": ["*"], "dst": ["tag:server"], "users": ["deploy"]}`,
		`{"action": "check", "src": ["*"], "dst": ["autogroup:self"], "users": ["="]}`,
		`{"action": "accept", "src": ["ann@example.com"], "dst": ["Ann@Example.com"], "users": ["*"]}`,
		`{"action": "accept", "src": ["group:ann", "ann@example.com"], "dst": ["ann@example.com", "tag:server"], "users": ["*"]}`,
		`{"action": "reject", "src": ["*"], "dst": ["*", "bob@example.com"], "users": ["*"]}`,
	} {
		doc := `{"identity": "tailnet", "groups": {"group:ann": ["ann@example.com"]}, "tagOwners": {"tag:server": []}, "ssh": [` + rule + `]}`
		if _, err := Parse([]byte(doc), "p.hujson"); err != nil {
			t.Errorf("%s: %v", rule, err)
		}
	}
}

// TestTailnetIdentityMesh: "identity": "mesh" is the document as it was.
func TestTailnetIdentityMesh(t *testing.T) {
	b, err := os.ReadFile("testdata/full.hujson")
	if err != nil {
		t.Fatal(err)
	}
	src := withKeys(string(b))
	explicit := strings.Replace(src, `"nodes": {`, `"identity": "mesh", "nodes": {`, 1)
	a, err := Parse([]byte(src), "full.hujson")
	if err != nil {
		t.Fatal(err)
	}
	bdoc, err := Parse([]byte(explicit), "full.hujson")
	if err != nil {
		t.Fatal(err)
	}
	if bdoc.IdentitySource() != "mesh" {
		t.Errorf("IdentitySource() = %q", bdoc.IdentitySource())
	}
	for _, s := range a.Nodes() {
		for _, d := range a.Nodes() {
			r := Request{Key: s.Key, Self: d.Key, User: "deploy"}
			da, _ := a.Evaluate(context.Background(), r)
			db, _ := bdoc.Evaluate(context.Background(), r)
			if diff := cmp.Diff(da, db, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(Decision{}, "RulePos")); diff != "" {
				t.Errorf("%s → %s: (-absent +mesh)\n%s", s.Node, d.Node, diff)
			}
		}
	}
	// Tailnet selectors stay tailnet-only.
	_, err = Parse([]byte(strings.Replace(src, `"src": ["tag:ci"]`, `"src": ["autogroup:tagged"]`, 1)), "full.hujson")
	if err == nil || !strings.Contains(err.Error(), `unknown autogroup "autogroup:tagged" (src takes autogroup:member)`) {
		t.Errorf("autogroup:tagged in a mesh document: %v", err)
	}
}

// TestTailnetRuleID: a rule's RuleID is the digest of what it says, on a
// tailnet as on the mesh: the same rule in another place keeps it.
func TestTailnetRuleID(t *testing.T) {
	const rule = `{"action": "check", "src": ["ann@example.com"], "dst": ["tag:server"], "users": ["deploy"]}`
	ids := map[string]bool{}
	for _, rules := range []string{rule, `{"action": "reject", "src": ["*"], "dst": ["*"], "users": ["root"]}, ` + rule} {
		doc, err := Parse([]byte(`{"identity": "tailnet", "tagOwners": {"tag:server": []}, "ssh": [`+rules+`]}`), "p.hujson")
		if err != nil {
			t.Fatal(err)
		}
		d, _ := doc.Evaluate(context.Background(), Request{User: "deploy", Caller: &Identity{Owner: "ann@example.com"}, Server: &tnBuild1})
		if d.Action != Check || d.RuleID == "" {
			t.Fatalf("%+v: want a check with a RuleID", d)
		}
		ids[d.RuleID] = true
	}
	if len(ids) != 1 {
		t.Errorf("RuleIDs %v: want one", ids)
	}
}

func TestTailnetExplain(t *testing.T) {
	doc := loadTailnet(t)
	doc.Now = func() time.Time { return time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) }
	e, err := doc.Explain("Carol@Example.com", "tag:ci", "deploy")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"carol@example.com → tag:ci as deploy: reject (no rule matched: deny by default)",
		"ssh[0] (tailnet.hujson:17) reject: no match: dst [tag:prod] does not include a node tagged tag:ci",
		"ssh[1] (tailnet.hujson:20) accept: no match: src [group:ops] does not include a node of carol@example.com",
		"ssh[4] (tailnet.hujson:30) check: no match: dst [autogroup:self] does not include a node tagged tag:ci; autogroup:self covers only nodes of carol@example.com",
		"ssh[6] (tailnet.hujson:34) reject: no match: src [autogroup:tagged] does not include a node of carol@example.com",
	} {
		if !strings.Contains(e.String(), want) {
			t.Errorf("Explain:\n%s\nlacks %q", e, want)
		}
	}
	for _, tc := range []struct{ src, dst, want string }{
		{"carol-laptop", "tag:ci", `caller: "carol-laptop" is not a login (user@domain) or tags`},
		{"carol@example.com", "tag:ci,", `destination: "" is not a tag`},
	} {
		if _, err := doc.Explain(tc.src, tc.dst, "x"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Explain(%q, %q) error = %v, want %q", tc.src, tc.dst, err, tc.want)
		}
	}
}

// TestPackageDocTailnetExample: the tailnet document in the package doc
// loads and its tests pass.
func TestPackageDocTailnetExample(t *testing.T) {
	src, err := os.ReadFile("policy.go")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(src), "// # Tailnet documents\n")
	var doc []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "//\t") {
			doc = append(doc, strings.TrimPrefix(line, "//\t"))
		} else if len(doc) > 0 {
			break
		}
	}
	if len(doc) == 0 {
		t.Fatal("no example under # Tailnet documents")
	}
	d, err := Parse([]byte(strings.Join(doc, "\n")), "doc.hujson")
	if err != nil {
		t.Fatal(err)
	}
	if _, rules, tests := d.Stats(); d.IdentitySource() != "tailnet" || rules != 3 || tests != 3 {
		t.Errorf("the package doc's tailnet example: %s, %d rules, %d tests", d.IdentitySource(), rules, tests)
	}
}

// TestTailnetNamesAreNotSelectors: a login or tag the coordinator reports
// is only ever that login or tag: a user called "tag:server",
// "autogroup:tagged" or "*", or a tag called "autogroup:member", gets
// nothing that selector gives.
func TestTailnetNamesAreNotSelectors(t *testing.T) {
	doc, err := Parse([]byte(`{
  "identity": "tailnet",
  "tagOwners": {"tag:server": []},
  "ssh": [
    {"action": "accept", "src": ["tag:server"], "dst": ["tag:server"], "users": ["t"]},
    {"action": "accept", "src": ["autogroup:tagged"], "dst": ["tag:server"], "users": ["g"]},
    {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["m"]},
    {"action": "reject", "src": ["*"], "dst": ["*"], "users": ["*"], "message": "no"},
  ],
}`), "p.hujson")
	if err != nil {
		t.Fatal(err)
	}
	srv := Identity{Tags: []string{"tag:server"}}
	for _, caller := range []Identity{
		{Owner: "tag:server"}, {Owner: "TAG:SERVER"}, {Owner: "autogroup:tagged"}, {Owner: "*"},
		{Tags: []string{"autogroup:member"}}, {Tags: []string{"*"}},
	} {
		for _, user := range []string{"t", "g", "m"} {
			d, err := doc.Evaluate(context.Background(), Request{User: user, Caller: &caller, Server: &srv})
			if err != nil {
				t.Fatal(err)
			}
			want := Reject
			if user == "m" && caller.Owner != "" || user == "g" && len(caller.Tags) > 0 {
				want = Accept // what it is: a member, or a tagged node
			}
			if d.Action != want {
				t.Errorf("caller %+v as %s: %v by %s, want %v", caller, user, d.Action, d.Rule, want)
			}
		}
	}
	// And the same names as the server's.
	alice := Identity{Owner: "alice@example.com"}
	for _, server := range []Identity{{Owner: "tag:server"}, {Tags: []string{"*"}}} {
		d, _ := doc.Evaluate(context.Background(), Request{User: "t", Caller: &alice, Server: &server})
		if d.Allowed() {
			t.Errorf("server %+v: %v by %s", server, d.Action, d.Rule)
		}
	}
}

// TestTailnetLongNames: logins and tags of 64 bytes and more (kept apart
// from the short ones, see Document.principalID) are named as any other.
func TestTailnetLongNames(t *testing.T) {
	long := strings.Repeat("a", 60) + "@example.com"
	tag := "tag:" + strings.Repeat("t", 70)
	doc, err := Parse([]byte(`{
  "identity": "tailnet",
  "tagOwners": {"`+tag+`": []},
  "ssh": [
    {"action": "accept", "src": ["`+strings.ToUpper(long)+`"], "dst": ["`+tag+`"], "users": ["deploy"]},
    {"action": "accept", "src": ["`+long+`"], "dst": ["`+long+`"], "users": ["x"]},
  ],
  "tests": [{"src": "`+long+`", "dst": "`+tag+`", "accept": ["deploy"], "deny": ["x"]}],
}`), "p.hujson")
	if err != nil {
		t.Fatal(err)
	}
	caller, server := Identity{Owner: strings.ToUpper(long)}, Identity{Tags: []string{tag}}
	if d, err := doc.Evaluate(context.Background(), Request{User: "deploy", Caller: &caller, Server: &server}); err != nil || d.Rule != "ssh[0]" {
		t.Errorf("long login into a long tag: %v by %q, %v", d.Action, d.Rule, err)
	}
	own := Identity{Owner: long}
	if d, err := doc.Evaluate(context.Background(), Request{User: "x", Caller: &caller, Server: &own}); err != nil || d.Rule != "ssh[1]" {
		t.Errorf("long login into its own node by login: %v by %q, %v", d.Action, d.Rule, err)
	}
}

// TestTailnetLookAlikeLogins: logins are compared ignoring ASCII case only.
// A coordinator's login spelled with a letter that Unicode case folding
// maps to an ASCII one (the Kelvin sign K lowers to k) is not that
// user's login: it gets no rule naming kate, is not the owner of her
// untagged server, and "=" gives it nothing of hers.
func TestTailnetLookAlikeLogins(t *testing.T) {
	doc, err := Parse([]byte(`{
  "identity": "tailnet",
  "tagOwners": {"tag:server": []},
  "ssh": [
    {"action": "accept", "src": ["kate@example.com"], "dst": ["tag:server"], "users": ["deploy"]},
    {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["="]},
  ],
}`), "p.hujson")
	if err != nil {
		t.Fatal(err)
	}
	tagged := Identity{Tags: []string{"tag:server"}}
	katesLaptop := Identity{Owner: "kate@example.com"}
	for _, tc := range []struct {
		caller Identity
		server *Identity
		user   string
		want   Action
	}{
		{Identity{Owner: "Kate@Example.COM"}, &tagged, "deploy", Accept}, // ASCII case is ignored
		{Identity{Owner: "\u212Aate@example.com"}, &tagged, "deploy", Reject},
		{Identity{Owner: "\u212Aate@example.com"}, &katesLaptop, "kate", Reject},
		{Identity{Owner: "kate@example.com"}, &katesLaptop, "kate", Accept},
	} {
		d, err := doc.Evaluate(context.Background(), Request{User: tc.user, Caller: &tc.caller, Server: tc.server})
		if err != nil {
			t.Fatal(err)
		}
		if d.Action != tc.want {
			t.Errorf("%q → %+v as %s: %v by %s, want %v", tc.caller.Owner, *tc.server, tc.user, d.Action, d.Rule, tc.want)
		}
	}
}
