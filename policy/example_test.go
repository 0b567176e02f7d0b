package policy_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

func ExampleParse() {
	doc, err := policy.Parse([]byte(`{
  "nodes": {
    "alice-laptop": {"key": "IEFpcTgXf2dtu3hfIZ2U9cvSl9TOLD9ZdMA5HyvTTW8=", "owner": "alice@example.com"},
    "build-1":      {"key": "lGqE8/8bL4EYaY7PKy+DSvqbHYmJSz8OtnwydoqbhSo=", "tags": ["tag:server"]},
  },
  "tagOwners": {"tag:server": ["alice@example.com"]},
  "ssh": [
    // First match wins; no match is a reject.
    {"action": "reject", "src": ["*"], "dst": ["tag:server"], "users": ["root"], "message": "no root on servers"},
    {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server"], "users": ["autogroup:nonroot"],
     "acceptEnv": ["LANG", "LC_*"]},
  ],
  "tests": [{"src": "alice-laptop", "dst": "build-1", "accept": ["deploy"], "deny": ["root"]}],
}`), "policy.hujson")
	if err != nil {
		log.Fatal(err)
	}
	alice, _ := meshkey.ParsePublic("IEFpcTgXf2dtu3hfIZ2U9cvSl9TOLD9ZdMA5HyvTTW8=")
	build1, _ := meshkey.ParsePublic("lGqE8/8bL4EYaY7PKy+DSvqbHYmJSz8OtnwydoqbhSo=")
	for _, user := range []string{"deploy", "root"} {
		d, err := doc.Evaluate(context.Background(), policy.Request{Key: alice, Self: build1, User: user})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s as %s: %s by %s (%s) local user %q message %q\n",
			d.Caller.Node, user, d.Action, d.Rule, d.RulePos, d.LocalUser, d.Message)
		fmt.Println("  LANG accepted:", policy.EnvAllowed(d.AcceptEnv, "LANG", "C.UTF-8"), " LD_PRELOAD accepted:", policy.EnvAllowed(d.AcceptEnv, "LD_PRELOAD", "/x.so"))
	}
	// Output:
	// alice-laptop as deploy: accept by ssh[1] (policy.hujson:10) local user "deploy" message ""
	//   LANG accepted: true  LD_PRELOAD accepted: false
	// alice-laptop as root: reject by ssh[0] (policy.hujson:9) local user "" message "no root on servers"
	//   LANG accepted: false  LD_PRELOAD accepted: false
}

func ExampleDocument_Explain() {
	doc, err := policy.Parse([]byte(`{
  "nodes": {
    "alice-laptop": {"key": "IEFpcTgXf2dtu3hfIZ2U9cvSl9TOLD9ZdMA5HyvTTW8=", "owner": "alice@example.com"},
    "bob-laptop":   {"key": "lGqE8/8bL4EYaY7PKy+DSvqbHYmJSz8OtnwydoqbhSo=", "owner": "bob@example.com"},
  },
  "ssh": [
    {"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["="]},
  ],
}`), "policy.hujson")
	if err != nil {
		log.Fatal(err)
	}
	e, err := doc.Explain("alice-laptop", "bob-laptop", "alice")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(e)
	// Output:
	// alice-laptop → bob-laptop as alice: reject (no rule matched: deny by default)
	// rules tried:
	//   ssh[0] (policy.hujson:7) check: no match: dst [autogroup:self] does not include bob-laptop (bob@example.com); autogroup:self covers only nodes of alice@example.com
}

func ExampleEnvAllowed() {
	patterns := []string{"LANG", "LC_*", "*_TOKEN"}
	for _, name := range []string{"LANG", "LC_ALL", "GITHUB_TOKEN", "LD_PRELOAD", "TERM"} {
		fmt.Println(name, policy.EnvAllowed(patterns, name, "x"))
	}
	fmt.Println("LD_PRELOAD with *:", policy.EnvAllowed([]string{"*"}, "LD_PRELOAD", "/x.so"))
	// Output:
	// LANG true
	// LC_ALL true
	// GITHUB_TOKEN true
	// LD_PRELOAD false
	// TERM false
	// LD_PRELOAD with *: false
}

// An application with its own control plane implements Policy itself;
// Func adapts a function.
func ExampleFunc() {
	admins := map[meshkey.Public]string{} // filled from the application's own store
	var p policy.Policy = policy.Func(func(ctx context.Context, r policy.Request) (policy.Decision, error) {
		name, ok := admins[r.Key]
		if !ok || r.User != name {
			return policy.Decision{Action: policy.Reject, Message: "ask an admin for access"}, nil
		}
		return policy.Decision{Action: policy.Accept, LocalUser: name, Rule: "admins"}, nil
	})
	d, _ := p.Evaluate(context.Background(), policy.Request{User: "root"})
	fmt.Println(d.Action, d.Message)
	// Output: reject ask an admin for access
}

// A tailnet document names no nodes: the server passes the identities the
// tailnet's coordinator vouches for (its WhoIs) as Request.Caller and
// Request.Server, and rules name logins, groups, tags and autogroups.
func ExampleParse_tailnet() {
	doc, err := policy.Parse([]byte(`{
  "identity": "tailnet",
  "groups":    {"group:ops": ["alice@example.com"]},
  "tagOwners": {"tag:server": ["group:ops"], "tag:ci": ["group:ops"]},
  "ssh": [
    {"action": "accept", "src": ["group:ops"], "dst": ["tag:server"], "users": ["autogroup:nonroot"]},
    {"action": "accept", "src": ["tag:ci"], "dst": ["tag:server"], "users": ["deploy"]},
    {"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["="]},
  ],
  "tests": [
    {"src": "alice@example.com", "dst": "tag:server", "accept": ["deploy"], "deny": ["root"]},
    {"src": "tag:ci", "dst": "alice@example.com", "deny": ["deploy", "alice"]},
  ],
}`), "policy.hujson")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("identities from:", doc.IdentitySource())
	alice := policy.Identity{Node: "alice-laptop", Owner: "alice@example.com"}
	build := policy.Identity{Node: "build-1", Tags: []string{"tag:server"}}
	ci := policy.Identity{Node: "ci-runner", Tags: []string{"tag:ci"}}
	for _, r := range []policy.Request{
		{Caller: &alice, Server: &build, User: "deploy"},
		{Caller: &ci, Server: &build, User: "deploy"},
		{Caller: &alice, Server: &alice, User: "alice"},
		{Caller: &ci, Server: &alice, User: "alice"},
	} {
		d, err := doc.Evaluate(context.Background(), r)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s → %s as %s: %s %s\n", d.Caller.Node, r.Server.Node, r.User, d.Action, d.Rule)
	}
	// Output:
	// identities from: tailnet
	// alice-laptop → build-1 as deploy: accept ssh[0]
	// ci-runner → build-1 as deploy: accept ssh[1]
	// alice-laptop → alice-laptop as alice: check ssh[2]
	// ci-runner → alice-laptop as alice: reject
}

// A server reloading its policy reparses the new version from the one in
// force: nodes whose bytes did not change are not compiled again, and a
// bad version leaves the old document as it was.
func ExampleDocument_Reparse() {
	const v1 = `{
  "nodes": {
    "alice-laptop": {"key": "IEFpcTgXf2dtu3hfIZ2U9cvSl9TOLD9ZdMA5HyvTTW8=", "owner": "alice@example.com"},
    "build-1":      {"key": "lGqE8/8bL4EYaY7PKy+DSvqbHYmJSz8OtnwydoqbhSo=", "tags": ["tag:server"]},
  },
  "tagOwners": {"tag:server": ["alice@example.com"]},
  "ssh": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server"], "users": ["deploy"]}],
}`
	doc, err := policy.Parse([]byte(v1), "policy.hujson")
	if err != nil {
		log.Fatal(err)
	}
	alice, _ := meshkey.ParsePublic("IEFpcTgXf2dtu3hfIZ2U9cvSl9TOLD9ZdMA5HyvTTW8=")
	build1, _ := meshkey.ParsePublic("lGqE8/8bL4EYaY7PKy+DSvqbHYmJSz8OtnwydoqbhSo=")
	show := func(doc *policy.Document) {
		d, _ := doc.Evaluate(context.Background(), policy.Request{Key: alice, Self: build1, User: "ops"})
		fmt.Println("alice as ops:", d.Action)
	}
	show(doc)

	// One rule changed: only the rules are compiled again.
	next, err := doc.Reparse([]byte(strings.Replace(v1, `["deploy"]`, `["deploy", "ops"]`, 1)), "policy.hujson")
	if err != nil {
		log.Fatal(err)
	}
	show(next)

	// A bad version: an error naming file, line and field; next stays in force.
	if _, err := next.Reparse([]byte(strings.Replace(v1, `"users"`, `"user"`, 1)), "policy.hujson"); err != nil {
		fmt.Println(err)
	}
	show(next)
	// Output:
	// alice as ops: reject
	// alice as ops: accept
	// policy.hujson:7:85: ssh[0]: unknown key "user" (want one of action, src, dst, users, message, checkPeriod, checkProof, expires, sessionDuration, acceptEnv, agentForward, localForward, remoteForward, record, onRecordingFailure, recorders)
	// policy.hujson:7:11: ssh[0]: missing "users"
	// alice as ops: accept
}

// A reload as `sshmesh serve` makes it on SIGHUP: ReadFile reads the file
// without keeping the bytes of nodes the document in force already has
// (with 100,000 nodes, most of the file), and ReparseFile parses the
// rest; File.Sum tells an unchanged file, which need not be parsed.
func ExampleReadFile() {
	dir, err := os.MkdirTemp("", "policy-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "policy.hujson")
	const v1 = `{
  "nodes": {
    "alice-laptop": {"key": "IEFpcTgXf2dtu3hfIZ2U9cvSl9TOLD9ZdMA5HyvTTW8=", "owner": "alice@example.com"},
    "build-1":      {"key": "lGqE8/8bL4EYaY7PKy+DSvqbHYmJSz8OtnwydoqbhSo=", "tags": ["tag:server"]},
  },
  "tagOwners": {"tag:server": ["alice@example.com"]},
  "ssh": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server"], "users": ["deploy"]}],
}`
	if err := os.WriteFile(path, []byte(v1), 0o600); err != nil {
		log.Fatal(err)
	}
	doc, err := policy.Load(path)
	if err != nil {
		log.Fatal(err)
	}
	first, err := policy.ReadFile(path, doc)
	if err != nil {
		log.Fatal(err)
	}

	// One rule changed, then the reload.
	if err := os.WriteFile(path, []byte(strings.Replace(v1, `["deploy"]`, `["deploy", "ops"]`, 1)), 0o600); err != nil {
		log.Fatal(err)
	}
	f, err := policy.ReadFile(path, doc)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("changed:", f.Sum != first.Sum)
	next, err := doc.ReparseFile(f)
	if err != nil {
		log.Fatal(err)
	}
	alice, _ := meshkey.ParsePublic("IEFpcTgXf2dtu3hfIZ2U9cvSl9TOLD9ZdMA5HyvTTW8=")
	build1, _ := meshkey.ParsePublic("lGqE8/8bL4EYaY7PKy+DSvqbHYmJSz8OtnwydoqbhSo=")
	d, _ := next.Evaluate(context.Background(), policy.Request{Key: alice, Self: build1, User: "ops"})
	fmt.Println("alice as ops:", d.Action)
	// Output:
	// changed: true
	// alice as ops: accept
}
