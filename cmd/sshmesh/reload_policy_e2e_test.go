package main

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestServeReloadPolicyNodes: a SIGHUP reload whose policy changes only
// rules (its nodes are not compiled again, see policy.Document.Reparse)
// keeps the sessions the new rules allow and ends those they do not, as
// a reload that compiles everything does; a reload that gives a node
// another key ends that node's sessions; a bad policy keeps the old one
// whole and is reported with its file and line.
func TestServeReloadPolicyNodes(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 3)
	server, a, b := m.Nodes[0], m.Nodes[1], m.Nodes[2]
	for _, n := range m.Nodes {
		n.Node.Close()
	}
	dir := t.TempDir()
	serverConf := filepath.Join(dir, "server.conf")
	serverWGQuick(server, a, b).Write(t, serverConf)
	aConf := a.WriteWGQuick(t, filepath.Join(dir, "a.conf"))
	bConf := b.WriteWGQuick(t, filepath.Join(dir, "b.conf"))
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	login := me.Username + "@" + server.Addr.String()
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
	polPath := filepath.Join(dir, "policy.hujson")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(polPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	root := `"root", "` + me.Username + `"`
	write(policyFor(root, "a", "b"))
	var log sshmeshtest.Buffer
	cmd := startServe(t, &log, nil, "--wg", serverConf, "--policy", polPath, "--hostkey", filepath.Join(dir, "hostkey"), "--port", "22", "--check-port", "0")
	hup := func() {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	ends := func(s *echoSession, what string) {
		t.Helper()
		ended := make(chan error, 1)
		go func() { ended <- s.cmd.Wait() }()
		select {
		case <-ended:
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: the session outlived the reload", what)
		}
	}
	keepalive := []string{"-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"}
	sessA := startEchoSession(t, aConf, login)
	sessB := startEchoSession(t, bConf, login, keepalive...)

	// A rule changed, both still allowed: nothing ends.
	write(policyFor(root+`, "deploy"`, "a", "b"))
	hup()
	waitCount(t, &log, "msg=reloaded", 1)
	sessA.alive(t, "after-rule-change")
	sessB.alive(t, "after-rule-change")

	// A bad rule: the old policy stays whole, the error names file and line.
	write(strings.Replace(policyFor(root, "a"), `"users"`, `"users": [], "userz"`, 1))
	hup()
	waitCount(t, &log, "reload failed", 1)
	if want := "file=" + polPath + " line=8"; !strings.Contains(log.String(), want) {
		t.Errorf("the failed reload does not say %q:\n%s", want, log.String())
	}
	sessA.alive(t, "after-bad-rule")
	sessB.alive(t, "after-bad-rule")

	// The rule no longer names B: B's session ends, A's goes on.
	write(policyFor(root, "a"))
	hup()
	waitCount(t, &log, "msg=reloaded", 2)
	ends(sessB, "B no longer allowed")
	sessA.alive(t, "after-B-refused")

	// B allowed again, then B's node given another key: the session of
	// the old key ends.
	write(policyFor(root, "a", "b"))
	hup()
	waitCount(t, &log, "msg=reloaded", 3)
	sessB = startEchoSession(t, bConf, login, keepalive...)
	other, err := meshkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	bKey = other.Public()
	write(policyFor(root, "a", "b"))
	hup()
	waitCount(t, &log, "msg=reloaded", 4)
	ends(sessB, "B's key changed")
	sessA.alive(t, "after-key-change")
	if !strings.Contains(log.String(), "policy reload ended conns it no longer allows") {
		t.Errorf("no reload said it ended conns:\n%s", log.String())
	}
}
