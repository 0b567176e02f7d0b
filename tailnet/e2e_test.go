package tailnet_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/checkpage"
	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/tailnet"
)

// tailnetPolicy is the e2e test's policy, a tailnet document (identity
// "tailnet"): callers by login and tag, the server by its tag. ALICE and CI
// and CHECKED are replaced by the local accounts made for the test.
const tailnetPolicy = `{
  "identity": "tailnet",
  "tagOwners": {"tag:server": ["alice@example.com"], "tag:ci": ["alice@example.com"]},
  "ssh": [
    {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server"], "users": ["ALICE"]},
    {"action": "accept", "src": ["tag:ci"], "dst": ["tag:server"], "users": ["CI"]},
    {"action": "check", "src": ["alice@example.com"], "dst": ["tag:server"], "users": ["CHECKED"], "checkPeriod": "1h",
     "checkProof": "mesh"}, // the test approves with the page's button
    {"action": "reject", "src": ["bob@example.com"], "dst": ["tag:server"], "users": ["*"],
     "message": "bob may not log in to tag:server"},
  ],
  "tests": [
    {"src": "alice@example.com", "dst": "tag:server", "accept": ["ALICE"], "deny": ["root", "CI"]},
    {"src": "tag:ci", "dst": "tag:server", "accept": ["CI"], "deny": ["ALICE"]},
    {"src": "bob@example.com", "dst": "tag:server", "deny": ["ALICE", "CI", "CHECKED"]},
    {"src": "alice@example.com", "dst": "tag:server", "check": ["CHECKED"]},
  ],
}`

// loadTailnetPolicy parses the document with the test's account names.
func loadTailnetPolicy(t testing.TB, alice, ci, checked string) policy.Policy {
	text := strings.NewReplacer("ALICE", alice, "CI", ci, "CHECKED", checked).Replace(tailnetPolicy)
	doc, err := policy.Parse([]byte(text), "tailnet-policy.hujson")
	if err != nil {
		t.Fatalf("tailnet policy: %v", err)
	}
	return doc
}

// tailnetFixture is a headscale tailnet with an sshmesh server node tagged
// tag:server and tailscaled clients: alice (two nodes), bob and a tag:ci machine.
type tailnetFixture struct {
	hs         *headscale
	node       *tailnet.Node
	srv        *sshmesh.Server
	log        *testkit.Buffer
	host       string // the server's tailnet IPv4 address
	alice, bob *tailscaled
	aliceDesk  *tailscaled // alice's second node
	ci         *tailscaled
	aliceUser  *testkit.User
	ciUser     *testkit.User
	checkUser  *testkit.User // alice's account behind a check rule
}

func newTailnetFixture(t testing.TB) *tailnetFixture {
	tl := needTools(t)
	testkit.NeedBinary(t, "ssh", "openssh-client")
	f := &tailnetFixture{log: &testkit.Buffer{}}
	f.aliceUser = testkit.NewUser(t, testkit.UserOptions{})
	f.ciUser = testkit.NewUser(t, testkit.UserOptions{})
	f.checkUser = testkit.NewUser(t, testkit.UserOptions{})
	f.hs = startHeadscale(t, tl)
	alice := f.hs.createUser("alice", "alice@example.com")
	bob := f.hs.createUser("bob", "bob@example.com")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	node, err := tailnet.New(ctx, tailnet.Config{
		ControlURL: f.hs.URL,
		AuthKey:    f.hs.authKey(0, "tag:server"),
		Dir:        filepath.Join(dir, "tsnet"),
		Hostname:   "sshmesh-srv",
		Logger:     f.log.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	f.node = node
	f.host = node.Addresses()[0].String()

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = &sshmesh.Server{
		Policy:            loadTailnetPolicy(t, f.aliceUser.Name, f.ciUser.Name, f.checkUser.Name),
		HostKeys:          []ssh.Signer{signer},
		Logger:            f.log.Logger(),
		KeepAliveInterval: 2 * time.Second,
	}
	checkLn, err := node.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	checker := &checkpage.Checker{
		// The coordinator vouches for every visitor (tailnet.Conn).
		Identify: func(meshkey.Public) (policy.Identity, bool) { return policy.Identity{}, false },
		Timeout:  2 * time.Minute,
		Dial:     node.Dial,
		Logger:   f.log.Logger(),
	}
	go checker.Serve(checkLn)
	t.Cleanup(func() { checker.Close() })
	f.srv.Checker = checker
	ln, err := node.Listen("tcp", ":22")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(ln) }()
	t.Cleanup(func() {
		f.srv.Close()
		if err := <-served; !errors.Is(err, sshmesh.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})

	// The clients at once: each login takes a few seconds.
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); f.alice = startTailscaled(t, tl, f.hs, "alice-laptop", f.hs.authKey(alice)) }()
	go func() {
		defer wg.Done()
		f.aliceDesk = startTailscaled(t, tl, f.hs, "alice-desktop", f.hs.authKey(alice))
	}()
	go func() { defer wg.Done(); f.bob = startTailscaled(t, tl, f.hs, "bob-laptop", f.hs.authKey(bob)) }()
	go func() { defer wg.Done(); f.ci = startTailscaled(t, tl, f.hs, "ci-runner", f.hs.authKey(0, "tag:ci")) }()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return f
}

// sshOptions are the stock ssh's options through d's `tailscale nc`.
func sshOptions(d *tailscaled) []string {
	return []string{"-F", "/dev/null", "-o", "ProxyCommand=" + d.proxyCommand(),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=60", "-o", "IdentityAgent=none",
		"-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3"}
}

// stockSSH runs the stock ssh client of d against the server.
func (f *tailnetFixture) stockSSH(t *testing.T, d *tailscaled, user string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := append(append(sshOptions(d), user+"@"+f.host), args...)
	cmd := exec.CommandContext(ctx, "ssh", all...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("ssh: %v", err)
	}
	return so.String(), se.String(), code
}

func TestTailnetStockSSH(t *testing.T) {
	f := newTailnetFixture(t)

	t.Run("alice is accepted as her mapped user", func(t *testing.T) {
		out, errOut, code := f.stockSSH(t, f.alice, f.aliceUser.Name, "id -un")
		if code != 0 || strings.TrimSpace(out) != f.aliceUser.Name {
			t.Fatalf("ssh as alice: exit %d, stdout %q, stderr %q; want %s", code, out, errOut, f.aliceUser.Name)
		}
	})
	t.Run("alice may not log in as the ci account", func(t *testing.T) {
		out, errOut, code := f.stockSSH(t, f.alice, f.ciUser.Name, "id -un")
		if code != 255 || out != "" {
			t.Fatalf("ssh as %s from alice: exit %d, stdout %q, stderr %q; want refused", f.ciUser.Name, code, out, errOut)
		}
	})
	t.Run("bob is refused with the rule's message", func(t *testing.T) {
		out, errOut, code := f.stockSSH(t, f.bob, f.aliceUser.Name, "id -un")
		if code != 255 || out != "" || !strings.Contains(errOut, "bob may not log in to tag:server") {
			t.Fatalf("ssh as bob: exit %d, stdout %q, stderr %q; want refused with the rule's message", code, out, errOut)
		}
	})
	t.Run("a tag:ci node is mapped by the tag rule", func(t *testing.T) {
		out, errOut, code := f.stockSSH(t, f.ci, f.ciUser.Name, "id -un")
		if code != 0 || strings.TrimSpace(out) != f.ciUser.Name {
			t.Fatalf("ssh from the tag:ci node: exit %d, stdout %q, stderr %q; want %s", code, out, errOut, f.ciUser.Name)
		}
	})
	t.Run("scp and sftp", func(t *testing.T) {
		testkit.NeedBinary(t, "/usr/lib/openssh/sftp-server", "openssh-sftp-server")
		src := filepath.Join(t.TempDir(), "payload")
		payload := bytes.Repeat([]byte("tailnet scp\n"), 50000)
		if err := os.WriteFile(src, payload, 0o644); err != nil {
			t.Fatal(err)
		}
		scp := append(sshOptions(f.alice), src, f.aliceUser.Name+"@"+f.host+":payload")
		if out, err := exec.Command("scp", scp...).CombinedOutput(); err != nil {
			t.Fatalf("scp: %v\n%s", err, out)
		}
		back := filepath.Join(t.TempDir(), "back")
		batch := filepath.Join(t.TempDir(), "batch")
		os.WriteFile(batch, []byte("get payload "+back+"\n"), 0o644)
		sftp := append(sshOptions(f.alice), "-b", batch, f.aliceUser.Name+"@"+f.host)
		if out, err := exec.Command("sftp", sftp...).CombinedOutput(); err != nil {
			t.Fatalf("sftp: %v\n%s", err, out)
		}
		got, err := os.ReadFile(back)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("sftp got %d bytes (%v), want the %d scp sent", len(got), err, len(payload))
		}
	})
	t.Run("a check rule holds the login until alice approves in Chromium from her node", func(t *testing.T) {
		f.checkInBrowser(t)
	})
	t.Run("removing alice's node from headscale ends her open session", func(t *testing.T) {
		f.revokedBy(t, f.alice, f.aliceUser.Name, "alice@example.com", "nodes", "delete", "--force", "-i", f.hs.nodeID("alice-laptop"))
	})
	t.Run("expiring alice's other node ends her session there", func(t *testing.T) {
		f.revokedBy(t, f.aliceDesk, f.aliceUser.Name, "alice@example.com", "nodes", "expire", "-i", f.hs.nodeID("alice-desktop"))
	})
	t.Run("the ci node losing tag:ci ends its session", func(t *testing.T) {
		f.revokedBy(t, f.ci, f.ciUser.Name, "tag:ci", "nodes", "tag", "-i", f.hs.nodeID("ci-runner"), "-t", "tag:other")
	})
}

// revokedBy opens a session of who (an owner login or a tag) from d as
// user, runs the headscale command that takes d's standing away, and waits
// (generously) for the server to end the conn.
func (f *tailnetFixture) revokedBy(t *testing.T, d *tailscaled, user, who string, headscaleCmd ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append(append(sshOptions(d), user+"@"+f.host), "echo started; exec sleep 600")
	cmd := exec.CommandContext(ctx, "ssh", args...)
	out := &testkit.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	out.WaitFor(t, "started")
	open := func() bool {
		for _, c := range f.srv.Conns() {
			if c.Identity.Owner == who || slices.Contains(c.Identity.Tags, who) {
				return true
			}
		}
		return false
	}
	if !open() {
		t.Fatalf("the server lists no conn of %s", who)
	}
	revokedBefore := strings.Count(f.log.String(), "access revoked")
	start := time.Now()
	f.hs.run(nil, headscaleCmd...)
	// Generous: the bound is for a loaded 2-core machine, not a goal.
	waitFor(t, 60*time.Second, "the server to end the conn of "+who, func() error {
		if open() {
			return errors.New("still open")
		}
		return nil
	})
	t.Logf("the session of %s ended %v after `headscale %s`", who, time.Since(start).Round(time.Millisecond), strings.Join(headscaleCmd, " "))
	if strings.Count(f.log.String(), "access revoked") <= revokedBefore {
		t.Errorf("the server's log says nothing of revoking the access of %s", who)
	}
}
