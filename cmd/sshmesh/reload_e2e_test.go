package main

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// waitCount waits up to 20 s until s occurs n times in log.
func waitCount(t *testing.T, log *sshmeshtest.Buffer, s string, n int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Count(log.String(), s) >= n {
			return
		}
	}
	t.Fatalf("%q did not occur %d times in 20s; log:\n%s", s, n, log.String())
}

// serverWGQuick is the server's wg-quick file with only the given peers
// (nodes of the same mesh).
func serverWGQuick(server *sshmeshtest.Node, peers ...*sshmeshtest.Node) testkit.WGQuick {
	c := testkit.WGQuick{PrivateKey: server.Key, Addresses: server.Config.Addresses, ListenPort: server.Config.ListenPort}
	for _, p := range peers {
		c.Peers = append(c.Peers, testkit.WGPeer{PublicKey: p.Key.Public(), AllowedIPs: p.Config.Addresses,
			Endpoint: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p.Config.ListenPort)})
	}
	return c
}

// echoSession is a stock ssh session running a loop that echoes each line
// it reads, prefixed: it shows that a conn is still alive.
type echoSession struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	err sshmeshtest.Buffer
}

func startEchoSession(t *testing.T, conf, target string, opts ...string) *echoSession {
	t.Helper()
	s := &echoSession{}
	args := append(append(append(meshClientOptions(conf), noAgent...), opts...), target, `echo open; while read l; do echo "echo:$l"; done`)
	s.cmd = exec.Command(sshmeshtest.NeedBinary(t, "ssh", "openssh-client"), args...)
	s.in, _ = s.cmd.StdinPipe()
	out, _ := s.cmd.StdoutPipe()
	s.out = bufio.NewReader(out)
	s.cmd.Stderr = &s.err
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait() })
	if line, _ := s.readLine(20 * time.Second); line != "open\n" {
		t.Fatalf("session to %s printed %q; stderr %s", target, line, s.err.String())
	}
	return s
}

func (s *echoSession) readLine(timeout time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	c := make(chan result, 1)
	go func() {
		l, err := s.out.ReadString('\n')
		c <- result{l, err}
	}()
	select {
	case r := <-c:
		return r.line, r.err
	case <-time.After(timeout):
		return "", fmt.Errorf("no line in %v", timeout)
	}
}

// alive checks that the session still answers.
func (s *echoSession) alive(t *testing.T, what string) {
	t.Helper()
	fmt.Fprintln(s.in, what)
	if line, err := s.readLine(10 * time.Second); line != "echo:"+what+"\n" {
		t.Fatalf("%s: the session answered %q, %v; stderr %s", what, line, err, s.err.String())
	}
}

// TestServeReloadPeers: SIGHUP re-reads the wg-quick file and the policy
// together. A session of peer A keeps running while peer B is added, logs
// in, and is removed (its session ends); a bad file changes neither the
// peers nor the policy and is reported with its line; a changed
// [Interface] is refused.
func TestServeReloadPeers(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 3)
	server, a, b := m.Nodes[0], m.Nodes[1], m.Nodes[2]
	for _, n := range m.Nodes {
		n.Node.Close()
	}
	dir := t.TempDir()
	serverConf := filepath.Join(dir, "server.conf")
	serverWGQuick(server, a).Write(t, serverConf)
	aConf := a.WriteWGQuick(t, filepath.Join(dir, "a.conf"))
	bConf := b.WriteWGQuick(t, filepath.Join(dir, "b.conf"))

	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	login := me.Username + "@" + server.Addr.String()
	policyFor := func(src ...string) string {
		return fmt.Sprintf(`{
  "nodes": {
    "srv": {"key": %q, "tags": ["tag:server"]},
    "a": {"key": %q, "owner": "%s@example.com"},
    "b": {"key": %q, "owner": "%s@example.com"},
  },
  "tagOwners": {"tag:server": ["%s@example.com"]},
  "ssh": [{"action": "accept", "src": [%s], "dst": ["tag:server"], "users": ["root", "="]}],
}`, server.Key.Public(), a.Key.Public(), me.Username, b.Key.Public(), me.Username, me.Username, `"`+strings.Join(src, `", "`)+`"`)
	}
	polPath := filepath.Join(dir, "policy.hujson")
	os.WriteFile(polPath, []byte(policyFor("a")), 0o600)

	var log sshmeshtest.Buffer
	cmd := startServe(t, &log, nil, "--wg", serverConf, "--policy", polPath, "--hostkey", filepath.Join(dir, "hostkey"), "--port", "22", "--check-port", "0")
	hup := func() {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	sessA := startEchoSession(t, aConf, login)
	sessA.alive(t, "before")

	// B added: to the peers and to the policy, in one reload.
	serverWGQuick(server, a, b).Write(t, serverConf)
	os.WriteFile(polPath, []byte(policyFor("a", "b")), 0o600)
	hup()
	waitCount(t, &log, "msg=reloaded", 1)
	if !strings.Contains(log.String(), "added=1 removed=0") {
		t.Errorf("the reload did not log the peer it added:\n%s", log.String())
	}
	sessA.alive(t, "after-add")
	if out, errOut, code := stockSSH(t, bConf, login, "echo b-in"); code != 0 || out != "b-in\n" {
		t.Fatalf("B after the reload: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// A bad file (a prefix of A's given to a new peer too) and a policy
	// that would refuse A: neither applies.
	good := serverWGQuick(server, a, b).String()
	other, _ := meshkey.NewPrivate()
	bad := good + "\n[Peer]\nPublicKey = " + other.Public().String() + "\nAllowedIPs = " + a.Addr.String() + "/32\n"
	badLine := strings.Count(good, "\n") + 4
	os.WriteFile(serverConf, []byte(bad), 0o600)
	os.WriteFile(polPath, []byte(policyFor("b")), 0o600)
	hup()
	waitCount(t, &log, "reload failed", 1)
	if want := fmt.Sprintf("file=%s line=%d", serverConf, badLine); !strings.Contains(log.String(), want) {
		t.Errorf("the failed reload does not say %q:\n%s", want, log.String())
	}
	// The policy refusing A did not apply (it would have ended A's conn).
	// No second login from A while its session is open: two `sshmesh nc`
	// with one key make the server roam between their ports.
	sessA.alive(t, "after-bad-file")
	if _, errOut, code := stockSSH(t, bConf, login, "true"); code != 0 {
		t.Errorf("B after the bad reload: exit %d, %s", code, errOut)
	}

	// A changed ListenPort needs a restart: refused, named with its line.
	moved := serverWGQuick(server, a, b)
	moved.ListenPort++
	moved.Write(t, serverConf)
	os.WriteFile(polPath, []byte(policyFor("a", "b")), 0o600)
	hup()
	waitCount(t, &log, "reload failed", 2)
	if want := fmt.Sprintf("line=4 err=%q", serverConf+":4: ListenPort: changed; the running node cannot take it live: restart sshmesh serve to apply it"); !strings.Contains(log.String(), want) {
		t.Errorf("the refused reload does not say %s:\n%s", want, log.String())
	}

	// B removed: its open session ends, A's goes on.
	sessB := startEchoSession(t, bConf, login, "-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3")
	sessA.alive(t, "before-remove")
	serverWGQuick(server, a).Write(t, serverConf)
	hup()
	waitCount(t, &log, "msg=reloaded", 2)
	if !strings.Contains(log.String(), "added=0 removed=1 changed=0 conns_ended=1") {
		t.Errorf("the reload did not end B's conn:\n%s", log.String())
	}
	ended := make(chan error, 1)
	go func() { ended <- sessB.cmd.Wait() }()
	select {
	case <-ended:
	case <-time.After(15 * time.Second):
		t.Fatal("B's session outlived its removal from the mesh")
	}
	sessA.alive(t, "after-remove")
}
