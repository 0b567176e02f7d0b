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

// ends checks that the session ends within 15 s (what ended it: what).
func (s *echoSession) ends(t *testing.T, what string) {
	t.Helper()
	ended := make(chan error, 1)
	go func() { ended <- s.cmd.Wait() }()
	select {
	case <-ended:
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: the session outlived the reload", what)
	}
}

// reloadServe is a `sshmesh serve` whose wg-quick file and policy a test
// rewrites and reloads with SIGHUP: a mesh of a server and two peers, a
// and b, whose in-process nodes are closed (the serve process and stock
// ssh clients through `sshmesh nc` take their keys and ports).
type reloadServe struct {
	server, a, b *sshmeshtest.Node
	serverConf   string // the server's wg-quick file: the test writes it before start
	aConf, bConf string // the peers' wg-quick files, for stock ssh
	policy       string // the policy file: the test writes it before start
	me           *user.User
	login        string // me at the server's mesh address
	dir          string
	log          sshmeshtest.Buffer
	cmd          *exec.Cmd
}

// newReloadServe makes the mesh and the peers' files; the server is
// started by start, once its wg-quick file and policy are written.
func newReloadServe(t *testing.T) *reloadServe {
	t.Helper()
	m := sshmeshtest.NewMesh(t, 3)
	for _, n := range m.Nodes {
		n.Node.Close()
	}
	r := &reloadServe{server: m.Nodes[0], a: m.Nodes[1], b: m.Nodes[2], dir: t.TempDir()}
	r.serverConf = filepath.Join(r.dir, "server.conf")
	r.policy = filepath.Join(r.dir, "policy.hujson")
	r.aConf = r.a.WriteWGQuick(t, filepath.Join(r.dir, "a.conf"))
	r.bConf = r.b.WriteWGQuick(t, filepath.Join(r.dir, "b.conf"))
	var err error
	if r.me, err = user.Current(); err != nil {
		t.Fatal(err)
	}
	r.login = r.me.Username + "@" + r.server.Addr.String()
	return r
}

// writePolicy replaces the policy file's text (read at start and on hup).
func (r *reloadServe) writePolicy(t *testing.T, text string) {
	t.Helper()
	if err := os.WriteFile(r.policy, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs `sshmesh serve` on the server's files, until the test ends.
func (r *reloadServe) start(t *testing.T) {
	t.Helper()
	r.cmd = startServe(t, &r.log, nil, "--wg", r.serverConf, "--policy", r.policy,
		"--hostkey", filepath.Join(r.dir, "hostkey"), "--port", "22", "--check-port", "0")
}

// hup asks serve to reload both files.
func (r *reloadServe) hup(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// TestServeReloadPeers: SIGHUP re-reads the wg-quick file and the policy
// together. A session of peer A keeps running while peer B is added, logs
// in, and is removed (its session ends); a bad file changes neither the
// peers nor the policy and is reported with its line; a changed
// [Interface] is refused.
func TestServeReloadPeers(t *testing.T) {
	r := newReloadServe(t)
	server, a, b := r.server, r.a, r.b
	serverWGQuick(server, a).Write(t, r.serverConf)
	me := r.me.Username
	policyFor := func(src ...string) string {
		return fmt.Sprintf(`{
  "nodes": {
    "srv": {"key": %q, "tags": ["tag:server"]},
    "a": {"key": %q, "owner": "%s@example.com"},
    "b": {"key": %q, "owner": "%s@example.com"},
  },
  "tagOwners": {"tag:server": ["%s@example.com"]},
  "ssh": [{"action": "accept", "src": [%s], "dst": ["tag:server"], "users": ["root", "="]}],
}`, server.Key.Public(), a.Key.Public(), me, b.Key.Public(), me, me, `"`+strings.Join(src, `", "`)+`"`)
	}
	r.writePolicy(t, policyFor("a"))
	r.start(t)
	sessA := startEchoSession(t, r.aConf, r.login)
	sessA.alive(t, "before")

	// B added: to the peers and to the policy, in one reload.
	serverWGQuick(server, a, b).Write(t, r.serverConf)
	r.writePolicy(t, policyFor("a", "b"))
	r.hup(t)
	waitCount(t, &r.log, "msg=reloaded", 1)
	if !strings.Contains(r.log.String(), "added=1 removed=0") {
		t.Errorf("the reload did not log the peer it added:\n%s", r.log.String())
	}
	sessA.alive(t, "after-add")
	if out, errOut, code := stockSSH(t, r.bConf, r.login, "echo b-in"); code != 0 || out != "b-in\n" {
		t.Fatalf("B after the reload: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// A bad file (a prefix of A's given to a new peer too) and a policy
	// that would refuse A: neither applies.
	good := serverWGQuick(server, a, b).String()
	other, _ := meshkey.NewPrivate()
	bad := good + "\n[Peer]\nPublicKey = " + other.Public().String() + "\nAllowedIPs = " + a.Addr.String() + "/32\n"
	badLine := strings.Count(good, "\n") + 4
	if err := os.WriteFile(r.serverConf, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	r.writePolicy(t, policyFor("b"))
	r.hup(t)
	waitCount(t, &r.log, "reload failed", 1)
	if want := fmt.Sprintf("file=%s line=%d", r.serverConf, badLine); !strings.Contains(r.log.String(), want) {
		t.Errorf("the failed reload does not say %q:\n%s", want, r.log.String())
	}
	// The policy refusing A did not apply (it would have ended A's conn).
	// No second login from A while its session is open: two `sshmesh nc`
	// with one key make the server roam between their ports.
	sessA.alive(t, "after-bad-file")
	if _, errOut, code := stockSSH(t, r.bConf, r.login, "true"); code != 0 {
		t.Errorf("B after the bad reload: exit %d, %s", code, errOut)
	}

	// A changed ListenPort needs a restart: refused, named with its line.
	moved := serverWGQuick(server, a, b)
	moved.ListenPort++
	moved.Write(t, r.serverConf)
	r.writePolicy(t, policyFor("a", "b"))
	r.hup(t)
	waitCount(t, &r.log, "reload failed", 2)
	if want := fmt.Sprintf("line=4 err=%q", r.serverConf+":4: ListenPort: changed; the running node cannot take it live: restart sshmesh serve to apply it"); !strings.Contains(r.log.String(), want) {
		t.Errorf("the refused reload does not say %s:\n%s", want, r.log.String())
	}

	// B removed: its open session ends, A's goes on.
	sessB := startEchoSession(t, r.bConf, r.login, "-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3")
	sessA.alive(t, "before-remove")
	serverWGQuick(server, a).Write(t, r.serverConf)
	r.hup(t)
	waitCount(t, &r.log, "msg=reloaded", 2)
	if !strings.Contains(r.log.String(), "added=0 removed=1 changed=0 conns_ended=1") {
		t.Errorf("the reload did not end B's conn:\n%s", r.log.String())
	}
	sessB.ends(t, "B removed from the mesh")
	sessA.alive(t, "after-remove")
}
