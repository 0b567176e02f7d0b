package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// badBase is a valid document; each bad case edits one spot of it.
const badBase = `{
  "nodes": {
    "lap":     {"key": "KEY1", "owner": "ann@example.com"},
    "bob-lap": {"key": "KEY2", "owner": "bob@example.com"},
    "srv":     {"key": "KEY3", "tags": ["tag:server"]},
  },
  "groups": {"group:ops": ["ann@example.com"]},
  "tagOwners": {"tag:server": ["group:ops"]},
  "ssh": [
    {"action": "accept", "src": ["group:ops"], "dst": ["tag:server"], "users": ["autogroup:nonroot"]},
  ],
  "tests": [{"src": "lap", "dst": "srv", "accept": ["deploy"], "deny": ["root"]}],
}`

// badEdits are the edits of badBase that TestParseErrors checks.
var badEdits = []struct {
	name     string
	old, new string // edit badBase: replace old with new
	at       string // the error points at the first occurrence of this in the edited document
	want     string // field: problem, as in the error after "file:line:col: "
}{
	{"syntax", `"srv":     {`, `"srv"      {`, `{"key": "KEY3"`, `syntax error: invalid character '{' after object name`},
	{"unknown top-level key", `"tests":`, `"test":`, `"test":`, `unknown key "test"`},
	{"unknown rule key", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "acceptenv": []}`, `"acceptenv"`, `ssh[0]: unknown key "acceptenv"`},
	{"unknown node key", `"owner": "bob@example.com"`, `"owners": "bob@example.com"`, `"owners"`, `nodes.bob-lap: unknown key "owners"`},
	{"duplicate key", `"action": "accept",`, `"action": "accept", "action": "reject",`, `"action": "reject"`, `ssh[0].action: duplicate key "action"`},
	{"unknown autogroup", `autogroup:nonroot`, `autogroup:nonrot`, `"autogroup:nonrot"`, `ssh[0].users[0]: unknown autogroup "autogroup:nonrot"`},
	{"undefined group", `"src": ["group:ops"]`, `"src": ["group:dev"]`, `"group:dev"`, `ssh[0].src[0]: undefined group "group:dev"`},
	{"undefined tag in dst", `"dst": ["tag:server"]`, `"dst": ["tag:web"]`, `"tag:web"`, `ssh[0].dst[0]: undefined tag "tag:web"`},
	{"undefined node", `"src": ["group:ops"]`, `"src": ["laptop"]`, `"laptop"`, `ssh[0].src[0]: undefined node "laptop"`},
	{"undefined tag on node", `"tags": ["tag:server"]`, `"tags": ["tag:srv"]`, `"tag:srv"`, `nodes.srv.tags[0]: undefined tag "tag:srv" (declare it in tagOwners)`},
	{"undefined group in group", `["ann@example.com"]}`, `["ann@example.com", "group:x"]}`, `"group:x"`, `groups.group:ops[1]: undefined group "group:x"`},
	{"group cycle", `"groups": {"group:ops": ["ann@example.com"]}`, `"groups": {"group:ops": ["ann@example.com", "group:b"], "group:b": ["group:ops"]}`,
		`"group:ops"]`, `groups.group:b[0]: group cycle: group:ops → group:b → group:ops`},
	{"bad duration", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "sessionDuration": "12 hours"}`, `"12 hours"`, `ssh[0].sessionDuration: "12 hours" is not a positive duration like "12h" or "90m"`},
	{"bad date", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "expires": "2027-01-01"}`, `"2027-01-01"`, `ssh[0].expires: "2027-01-01" is not an RFC 3339 time`},
	{"bad key", `"KEY2"`, `"bm90IGEga2V5"`, `"bm90IGEga2V5"`, `nodes.bob-lap.key: meshkey: public key is 12 characters of text, want 44`},
	{"duplicate node key", `"KEY2"`, `"KEY1"`, `"KEY1", "owner": "bob`, `nodes.bob-lap.key: duplicate key: node "lap" has the same key`},
	{"tagOwners", `["group:ops"]}`, `["group:nobody"]}`, `"group:nobody"`, `tagOwners.tag:server[0]: undefined group "group:nobody"`},
	{"safety: another person's node", `"dst": ["tag:server"]`, `"dst": ["tag:server", "bob-lap"]`, `["tag:server", "bob-lap"]`,
		`ssh[0].dst: accept rule would let lap (ann@example.com) into bob-lap, an untagged node of bob@example.com`},
	{"safety: * dst", `"dst": ["tag:server"]`, `"dst": ["*"]`, `["*"]`, `ssh[0].dst: accept rule would let lap (ann@example.com) into bob-lap`},
	{"safety: tagged src into a person's node", `"src": ["group:ops"], "dst": ["tag:server"]`, `"src": ["tag:server"], "dst": ["lap"]`, `["lap"]`,
		`ssh[0].dst: accept rule would let srv (tag:server) into lap, an untagged node of ann@example.com`},
	{"safety: check rules too", `"action": "accept", "src": ["group:ops"], "dst": ["tag:server"]`, `"action": "check", "src": ["*"], "dst": ["lap"]`, `["lap"]`,
		`ssh[0].dst: check rule would let bob-lap (bob@example.com) into lap`},
	{"loader env", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "acceptEnv": ["LANG", "LD_PRELOAD"]}`, `"LD_PRELOAD"`, `ssh[0].acceptEnv[1]: LD_PRELOAD changes how programs load`},
	{"loader env prefix", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "acceptEnv": ["DYLD_*"]}`, `"DYLD_*"`, `ssh[0].acceptEnv[0]: "DYLD_*" only names variables`},
	{"bad forward", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "localForward": ["localhost:99999"]}`, `"localhost:99999"`, `ssh[0].localForward[0]: "localhost:99999": port "99999" is not a number`},
	{"bad forward host", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "remoteForward": ["10.0.0.0/33:22"]}`, `"10.0.0.0/33:22"`, `ssh[0].remoteForward[0]: "10.0.0.0/33:22": bad CIDR prefix`},
	{"onRecordingFailure", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "record": true, "onRecordingFailure": "ignore"}`, `"ignore"`, `ssh[0].onRecordingFailure: "ignore" is not fail-open or fail-closed`},
	{"undefined recorder", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "record": true, "recorders": ["srv", "rec-1"]}`, `"rec-1"`, `ssh[0].recorders[1]: "rec-1" is not a node name or tag:NAME`},
	{"recorders without record", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "recorders": ["srv"]}`, `"recorders"`, `ssh[0].recorders: names recorders, but the rule does not record: add "record": true`},
	{"recorders with record false", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "record": false, "recorders": ["srv"]}`, `"recorders"`, `ssh[0].recorders: names recorders, but the rule does not record: add "record": true`},
	{"empty recorders", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "record": true, "recorders": []}`, `[]}`, `ssh[0].recorders: names no recorder: list recorders, or leave "recorders" out to record on the server`},
	{"undeclared recorder tag", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "record": true, "recorders": ["tag:recorder"]}`, `"tag:recorder"`, `ssh[0].recorders[0]: "tag:recorder" is not declared in tagOwners`},
	{"checkPeriod on accept", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "checkPeriod": "1h"}`, `"checkPeriod"`, `ssh[0].checkPeriod: only for check rules, not accept`},
	{"checkProof on accept", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "checkProof": "mesh"}`, `"checkProof"`, `ssh[0].checkProof: only for check rules, not accept`},
	{"bad checkProof", `"action": "accept"`, `"action": "check", "checkProof": "button"`, `"button"`, `ssh[0].checkProof: "button" is not passkey, oidc or mesh`},
	{"options on reject", `"action": "accept"`, `"action": "reject", "agentForward": true`, `"agentForward"`, `ssh[0].agentForward: only for accept and check rules, not reject`},
	{"bad action", `"action": "accept"`, `"action": "allow"`, `"allow"`, `ssh[0].action: "allow" is not accept, check or reject`},
	{"person in dst", `"dst": ["tag:server"]`, `"dst": ["ann@example.com"]`, `"ann@example.com"], "users"`, `ssh[0].dst[0]: dst names nodes, not people`},
	{"self in src", `"src": ["group:ops"]`, `"src": ["autogroup:self"]`, `"autogroup:self"`, `ssh[0].src[0]: autogroup:self is only for dst`},
	{"email owning nothing", `"src": ["group:ops"]`, `"src": ["carol@example.com"]`, `"carol@example.com"`, `ssh[0].src[0]: no node is owned by "carol@example.com"`},
	{"owner and tags", `"tags": ["tag:server"]`, `"tags": ["tag:server"], "owner": "ann@example.com"`, `{"key": "KEY3"`, `nodes.srv: a node has an owner or tags, not both`},
	{"neither owner nor tags", `"tags": ["tag:server"]`, `"tags": []`, `{"key": "KEY3"`, `nodes.srv: a node needs an owner or tags`},
	{"missing users", `, "users": ["autogroup:nonroot"]`, ``, `{"action"`, `ssh[0]: missing "users"`},
	{"empty users", `"users": ["autogroup:nonroot"]`, `"users": []`, `[]}`, `ssh[0].users: empty`},
	{"bad template", `"users": ["autogroup:nonroot"]`, `"users": ["{user}-admin"]`, `"{user}-admin"`, `ssh[0].users[0]: bad template "{user}-admin"`},
	{"bad login name", `"users": ["autogroup:nonroot"]`, `"users": ["ann smith"]`, `"ann smith"`, `ssh[0].users[0]: "ann smith" is not a valid login name`},
	{"wrong type", `"src": ["group:ops"]`, `"src": "group:ops"`, `"group:ops", "dst"`, `ssh[0].src: want an array, got a string`},
	{"bad message", `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"], "message": "hi\u001b[2J"}`, `"hi\u001b`, `ssh[0].message: control characters are not allowed`},
	{"test names an undefined node", `"src": "lap", "dst": "srv"`, `"src": "lap", "dst": "server"`, `"server"`, `tests[0].dst: undefined node "server" (tests name nodes)`},
	{"failing test", `"deny": ["root"]`, `"deny": ["deploy"]`, `"deploy"]}]`, `tests[0]: lap → srv as deploy: want deny, got accept by ssh[0] (line 10)`},
	// Comments inside "nodes" that hujson refuses (found by review: the
	// quick reading of nodes stepped over them).
	{"block comment not UTF-8 in nodes", `"lap":     {`, "/* \xff */ \"lap\": {", "/* \xff", `syntax error: invalid UTF-8 in comment`},
	{"line comment not UTF-8 in nodes", `"lap":     {`, "// \xff\n    \"lap\": {", "// \xff", `syntax error: invalid UTF-8 in comment`},
	{"line separator in a line comment in nodes", `"lap":     {`, "// a\u2028b\n    \"lap\": {", "\u2028b", `syntax error: invalid character '\u2028' in line comment`},
	{"failing test, no rule", `"accept": ["deploy"]`, `"accept": ["deploy"], "check": ["root"]`, `"root"]`, `tests[0]: lap → srv as root: want check, got deny (no rule matched)`},
}

func TestParseErrors(t *testing.T) {
	if _, err := Parse([]byte(withKeys(badBase)), "bad.hujson"); err != nil {
		t.Fatalf("the base document is bad: %v", err)
	}
	tests := badEdits
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(badBase, tt.old) {
				t.Fatalf("%q is not in the base document", tt.old)
			}
			doc := withKeys(strings.Replace(badBase, tt.old, tt.new, 1))
			at := strings.Index(doc, withKeys(tt.at))
			if at < 0 {
				t.Fatalf("%q is not in the edited document", tt.at)
			}
			line, col := newLines([]byte(doc)).at(at)
			want := fmt.Sprintf("bad.hujson:%d:%d: %s", line, col, tt.want)
			_, err := Parse([]byte(doc), "bad.hujson")
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

// TestParseErrorsAll: every problem is reported, one per line, not just the first.
func TestParseErrorsAll(t *testing.T) {
	doc := withKeys(strings.NewReplacer(`"group:ops"]`, `"group:dev"]`, `"owner": "bob@example.com"`, `"owner": "bob"`).Replace(badBase))
	_, err := Parse([]byte(doc), "bad.hujson")
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], `nodes.bob-lap.owner: "bob" is not an email address`) ||
		!strings.Contains(lines[1], `tagOwners.tag:server[0]: undefined group "group:dev"`) ||
		!strings.Contains(lines[2], `ssh[0].src[0]: undefined group "group:dev"`) {
		t.Errorf("Parse error:\n%v\nwant three lines: the owner, then each place naming the group", err)
	}
}

// TestParseErrorsAllSections: problems in nodes do not hide those in the
// rules, and a rule naming a node whose entry is broken is not reported
// again as naming an undefined one.
func TestParseErrorsAllSections(t *testing.T) {
	doc := withKeys(`{
  "nodes": {
    "srv": {"key": "KEY1", "tags": ["tag:server"], "colour": "red"},
    "lap": {"key": "KEY2", "owner": "ann@example.com"},
  },
  "tagOwners": {"tag:server": ["ann@example.com"]},
  "ssh": [
    {"action": "allow", "src": ["lap"], "dst": ["srv"], "users": ["x"]},
    {"action": "accept", "src": ["nosuchnode"], "dst": ["srv"], "users": ["x"]},
  ],
}`)
	_, err := Parse([]byte(doc), "p.hujson")
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	got := err.Error()
	for _, want := range []string{
		`p.hujson:3:92: nodes.srv: unknown key "colour"`,
		`p.hujson:8:16: ssh[0].action: "allow" is not accept, check or reject`,
		`p.hujson:9:34: ssh[1].src[0]: undefined node "nosuchnode"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Parse error:\n%s\nlacks %s", got, want)
		}
	}
	if strings.Contains(got, `undefined node "srv"`) {
		t.Errorf("a broken node reported again as undefined:\n%s", got)
	}
}

// TestIssueExample is the error the issue quotes, at the place it names.
func TestIssueExample(t *testing.T) {
	doc := withKeys(`{
  "nodes": {
    "alice-laptop": {"key": "KEY1", "owner": "alice@example.com"},
    "build-1":      {"key": "KEY2", "tags": ["tag:server"]},
  },
  "groups":    {"group:ops": ["alice@example.com", "bob@example.com"]},
  "tagOwners": {"tag:server": ["group:ops"]},
  "ssh": [
    {"action": "accept", "src": ["group:ops"], "dst": ["tag:server"], "users": ["autogroup:nonroot", "deploy"]},
    {"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"],
     "checkPeriod": "12h",
     "users": [
       // a typo
       "autogroup:nonrot"]},
  ],
}`)
	_, err := Parse([]byte(doc), "policy.hujson")
	want := `policy.hujson:14:8: ssh[1].users[0]: unknown autogroup "autogroup:nonrot" (users take autogroup:nonroot)`
	if err == nil || err.Error() != want {
		t.Errorf("Parse error = %v\nwant %s", err, want)
	}
}

// TestDuplicateKeyInLargeObject: an object with more members than
// smallObject checks duplicates with a map; a key spelt with an escape is
// the same key.
func TestDuplicateKeyInLargeObject(t *testing.T) {
	var groups strings.Builder
	for i := range smallObject + 2 {
		fmt.Fprintf(&groups, "\"group:g%d\": [\"ann@example.com\"],\n", i)
	}
	for _, dup := range []string{`"group:g3"`, `"group:g\u0033"`} {
		src := `{"nodes": {}, "groups": {` + groups.String() + dup + `: ["bob@example.com"]}, "ssh": []}`
		_, err := Parse([]byte(src), "p.hujson")
		if err == nil || !strings.Contains(err.Error(), `duplicate key "group:g3"`) {
			t.Errorf("%s among %d groups: %v, want a duplicate key error", dup, smallObject+2, err)
		}
	}
}
