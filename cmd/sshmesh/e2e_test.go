package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// These tests drive the stock OpenSSH client through `sshmesh nc`, built
// once per run, against `sshmesh serve` and against an in-process Server.

var binPath string

func TestMain(m *testing.M) {
	if proxy := os.Getenv(socks5ProxyEnv); proxy != "" {
		os.Exit(socks5ProxyCommand(proxy, os.Args[1:]))
	}
	dir, err := os.MkdirTemp("", "sshmesh-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "sshmesh")
	if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// meshClientOptions are the options with which the stock ssh, scp and sftp
// reach the mesh through `sshmesh nc --wg conf [ncFlags]`, with no config
// file, host-key prompt or SSH key setup.
func meshClientOptions(conf string, ncFlags ...string) []string {
	nc := strings.Join(append([]string{binPath, "nc", "--wg", conf}, ncFlags...), " ")
	return []string{"-F", "/dev/null", "-o", "ProxyCommand=" + nc + " %h %p",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=20"}
}

// noAgent keeps ssh from offering a running agent's keys (the mesh needs none).
var noAgent = []string{"-o", "IdentityAgent=none"}

// stockSSH runs the stock ssh client through `sshmesh nc --wg clientConf`.
func stockSSH(t *testing.T, clientConf string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ssh := sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all := append(append(meshClientOptions(clientConf), noAgent...), args...)
	cmd := exec.CommandContext(ctx, ssh, all...)
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

// TestStockSSHWithGoHandler: a Server with the test's own Go handler in this
// process, the stock ssh client in another, a real mesh between them.
func TestStockSSHWithGoHandler(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 2)
	server, client := m.Nodes[0], m.Nodes[1]
	// The client side is `sshmesh nc` in the ssh process; this node only
	// provides its config, so close it to free its UDP port.
	client.Node.Close()
	srv := &sshmesh.Server{
		Policy: policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
			if r.User == "mallory" {
				return policy.Decision{Rule: "ssh[0]", Message: "mallory is not welcome"}, nil
			}
			return policy.Decision{Action: policy.Accept, LocalUser: r.User}, nil
		}),
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
			if p, ok := s.Pty(); ok {
				fmt.Fprintf(s, "pty %s %dx%d\n", p.Term, p.Window.Cols, p.Window.Rows)
			}
			var code int
			if _, err := fmt.Sscanf(s.RawCommand(), "exit %d", &code); err == nil {
				fmt.Fprintf(s, "bye %s\n", s.Identity().User)
				s.Exit(code)
			}
		}),
	}
	sshmeshtest.Serve(t, server, srv)
	conf := client.WriteWGQuick(t, filepath.Join(t.TempDir(), "client.conf"))

	out, errOut, code := stockSSH(t, conf, "ann@"+server.Addr.String(), "exit 7")
	if code != 7 || out != "bye ann\n" {
		t.Errorf("ssh 'exit 7': exit %d, stdout %q, stderr %q; want 7 and \"bye ann\"", code, out, errOut)
	}
	_, errOut, code = stockSSH(t, conf, "mallory@"+server.Addr.String(), "true")
	if code != 255 || !strings.Contains(errOut, "mallory is not welcome") {
		t.Errorf("refused login: exit %d, stderr %q; want 255 and the policy's message", code, errOut)
	}
	out, _, code = stockSSH(t, conf, "-tt", "ann@"+server.Addr.String(), "exit 0")
	if code != 0 || !strings.HasPrefix(out, "pty ") {
		t.Errorf("ssh -tt: exit %d, stdout %q; want a pty", code, out)
	}
}

// startServe runs `sshmesh serve args...` (setup, if not nil, adjusts the
// command first), waits until it serves, and stops it with SIGINT at the
// end of the test. Its stdout and stderr go to log, shown when the test
// fails.
func startServe(t testing.TB, log *sshmeshtest.Buffer, setup func(*exec.Cmd), args ...string) *exec.Cmd {
	t.Helper()
	if !slices.Contains(args, "--state") {
		args = append(args, "--state", t.TempDir()) // not the machine's /var/lib/sshmesh
	}
	cmd := exec.Command(binPath, append([]string{"serve"}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if setup != nil {
		setup(cmd)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("serve log:\n%s", log.String())
		}
	})
	log.WaitFor(t, "serving SSH") // a plain line, or a JSON event on stderr
	return cmd
}

// TestServe runs `sshmesh serve` with a policy document and logs in with the
// stock client: an allowed user, a refused one with the rule's message, and
// the "=" mapping to the caller's local part.
func TestServe(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 2)
	server, client := m.Nodes[0], m.Nodes[1]
	server.Node.Close()
	client.Node.Close()
	dir := t.TempDir()
	serverConf := server.WriteWGQuick(t, filepath.Join(dir, "server.conf"))
	clientConf := client.WriteWGQuick(t, filepath.Join(dir, "client.conf"))

	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	owner := me.Username // "=" maps the owner's local part to this user
	pol := fmt.Sprintf(`{
  "nodes": {
    "srv": {"key": %q, "tags": ["tag:server"]},
    "laptop": {"key": %q, "owner": "%s@example.com"},
  },
  "tagOwners": {"tag:server": ["%s@example.com"]},
  "ssh": [
    {"action": "reject", "src": ["laptop"], "dst": ["tag:server"], "users": ["nobody"], "message": "policy-says-no"},
    {"action": "accept", "src": ["laptop"], "dst": ["tag:server"], "users": ["root", "="]},
  ],
}`, server.Key.Public(), client.Key.Public(), owner, owner)
	polPath := filepath.Join(dir, "policy.hujson")
	os.WriteFile(polPath, []byte(pol), 0o600)

	var log sshmeshtest.Buffer
	cmd := startServe(t, &log, nil, "--wg", serverConf, "--policy", polPath, "--hostkey", filepath.Join(dir, "hostkey"), "--port", "22")
	if !strings.Contains(log.String(), `serving SSH as node "srv" on 100.64.0.1 port 22`) {
		t.Fatalf("serve printed %q", log.String())
	}
	login := me.Username
	out, errOut, code := stockSSH(t, clientConf, login+"@"+server.Addr.String(), "echo hello-from-mesh; id -un; exit 7")
	if code != 7 || out != "hello-from-mesh\n"+login+"\n" {
		t.Errorf("ssh %s@: exit %d, stdout %q, stderr %q", login, code, out, errOut)
	}
	_, errOut, code = stockSSH(t, clientConf, "nobody@"+server.Addr.String(), "true")
	if code != 255 || !strings.Contains(errOut, "policy-says-no") {
		t.Errorf("refused login: exit %d, stderr %q", code, errOut)
	}
	_, _, code = stockSSH(t, clientConf, "unlisted@"+server.Addr.String(), "true")
	if code != 255 {
		t.Errorf("default deny: exit %d", code)
	}
	if !strings.Contains(log.String(), "rule=ssh[0]") {
		t.Errorf("the log does not name the rule that refused:\n%s", log.String())
	}

	// SIGHUP with a broken file: reported, the old policy kept.
	os.WriteFile(polPath, []byte(`{"ssh": [`), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	log.WaitFor(t, "reload failed")
	if _, errOut, code := stockSSH(t, clientConf, login+"@"+server.Addr.String(), "exit 3"); code != 3 {
		t.Errorf("after a bad reload the old policy should hold: exit %d, %s", code, errOut)
	}
	// SIGHUP with a policy that refuses that login: the open session of
	// that login ends with a message, and new logins are refused.
	open := exec.Command(sshmeshtest.NeedBinary(t, "ssh", "openssh-client"),
		append(meshClientOptions(clientConf), login+"@"+server.Addr.String(), "echo open; sleep 60")...)
	var openErr sshmeshtest.Buffer
	openOut, _ := open.StdoutPipe()
	open.Stderr = &openErr
	if err := open.Start(); err != nil {
		t.Fatal(err)
	}
	defer open.Process.Kill()
	if line, _ := bufio.NewReader(openOut).ReadString('\n'); line != "open\n" {
		t.Fatalf("long session printed %q; stderr %s", line, openErr.String())
	}
	os.WriteFile(polPath, []byte(strings.Replace(pol, `"users": ["nobody"]`, `"users": ["nobody", "`+login+`"]`, 1)), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	log.WaitFor(t, "msg=reloaded")
	ended := make(chan error, 1)
	go func() { ended <- open.Wait() }()
	// It ends at once; 20 s (of the session's 60) is for a loaded machine.
	select {
	case <-ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the open session outlived the reload that revoked it")
	}
	if !strings.Contains(openErr.String(), "access revoked by policy change") {
		t.Errorf("revoked session's stderr: %q", openErr.String())
	}
	if _, errOut, code := stockSSH(t, clientConf, login+"@"+server.Addr.String(), "true"); code != 255 || !strings.Contains(errOut, "policy-says-no") {
		t.Errorf("after reload the login should be refused: exit %d, %s", code, errOut)
	}
}
