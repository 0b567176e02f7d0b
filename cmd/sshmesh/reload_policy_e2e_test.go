package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/meshkey"
)

// TestServeReloadPolicyNodes: a SIGHUP reload whose policy changes only
// rules (its nodes are not compiled again, see policy.Document.Reparse)
// keeps the sessions the new rules allow and ends those they do not, as
// a reload that compiles everything does; a reload that gives a node
// another key ends that node's sessions; a bad policy keeps the old one
// whole and is reported with its file and line.
func TestServeReloadPolicyNodes(t *testing.T) {
	r := newReloadServe(t)
	server, a, b := r.server, r.a, r.b
	serverWGQuick(server, a, b).Write(t, r.serverConf)
	bKey := b.Key.Public()
	policyFor := func(users string, src ...string) string {
		return fmt.Sprintf(`{
  "nodes": {
    "srv": {"key": %q, "tags": ["tag:server"]},
    "a": {"key": %q, "owner": "a@example.com"},
    "b": {"key": %q, "owner": "b@example.com"},
  },
  "tagOwners": {"tag:server": ["a@example.com"]},
  "ssh": [{"action": "accept", "src": [%s], "dst": ["tag:server"], "users": [%s]}],
}`, server.Key.Public(), a.Key.Public(), bKey, `"`+strings.Join(src, `", "`)+`"`, users)
	}
	root := `"root", "` + r.me.Username + `"`
	r.writePolicy(t, policyFor(root, "a", "b"))
	r.start(t)
	keepalive := []string{"-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"}
	sessA := startEchoSession(t, r.aConf, r.login)
	sessB := startEchoSession(t, r.bConf, r.login, keepalive...)

	// A rule changed, both still allowed: nothing ends.
	r.writePolicy(t, policyFor(root+`, "deploy"`, "a", "b"))
	r.hup(t)
	waitCount(t, &r.log, "msg=reloaded", 1)
	sessA.alive(t, "after-rule-change")
	sessB.alive(t, "after-rule-change")

	// A bad rule: the old policy stays whole, the error names file and line.
	r.writePolicy(t, strings.Replace(policyFor(root, "a"), `"users"`, `"users": [], "userz"`, 1))
	r.hup(t)
	waitCount(t, &r.log, "reload failed", 1)
	if want := "file=" + r.policy + " line=8"; !strings.Contains(r.log.String(), want) {
		t.Errorf("the failed reload does not say %q:\n%s", want, r.log.String())
	}
	sessA.alive(t, "after-bad-rule")
	sessB.alive(t, "after-bad-rule")

	// The rule no longer names B: B's session ends, A's goes on.
	r.writePolicy(t, policyFor(root, "a"))
	r.hup(t)
	waitCount(t, &r.log, "msg=reloaded", 2)
	sessB.ends(t, "B no longer allowed")
	sessA.alive(t, "after-B-refused")

	// B allowed again, then B's node given another key: the session of
	// the old key ends.
	r.writePolicy(t, policyFor(root, "a", "b"))
	r.hup(t)
	waitCount(t, &r.log, "msg=reloaded", 3)
	sessB = startEchoSession(t, r.bConf, r.login, keepalive...)
	other, err := meshkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	bKey = other.Public()
	r.writePolicy(t, policyFor(root, "a", "b"))
	r.hup(t)
	waitCount(t, &r.log, "msg=reloaded", 4)
	sessB.ends(t, "B's key changed")
	sessA.alive(t, "after-key-change")
	if !strings.Contains(r.log.String(), "policy reload ended conns it no longer allows") {
		t.Errorf("no reload said it ended conns:\n%s", r.log.String())
	}
}
