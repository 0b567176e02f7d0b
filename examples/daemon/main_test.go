package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/examples/internal/exampletest"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestDaemon builds the daemon, runs it from a wg-quick file and a policy,
// reaches its status page and logs in over the mesh from an in-process
// node, then sends SIGTERM during a session: the session finishes and the
// daemon exits 0.
func TestDaemon(t *testing.T) {
	bin, err := exampletest.Build(t.TempDir(), ".", "daemon")
	if err != nil {
		t.Fatal(err)
	}
	m := sshmeshtest.NewMesh(t, 2)
	server, client := m.Nodes[0], m.Nodes[1]
	server.Node.Close() // the daemon runs this node from its file
	dir := t.TempDir()
	conf := server.WriteWGQuick(t, filepath.Join(dir, "daemon.conf"))
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	pol := fmt.Sprintf(`{
  "nodes": {
    "daemon": {"key": %q, "tags": ["tag:daemon"]},
    "laptop": {"key": %q, "owner": "%s@example.com"},
  },
  "tagOwners": {"tag:daemon": ["%s@example.com"]},
  "ssh": [{"action": "accept", "src": ["laptop"], "dst": ["tag:daemon"], "users": [%q]}],
}`, server.Key.Public(), client.Key.Public(), me.Username, me.Username, me.Username)
	polPath := filepath.Join(dir, "policy.hujson")
	if err := os.WriteFile(polPath, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}

	var log sshmeshtest.Buffer
	cmd := exec.Command(bin, "--wg", conf, "--policy", polPath, "--state", dir)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill() // only if the test failed before SIGTERM
		<-exited
		if t.Failed() {
			t.Logf("daemon log:\n%s", log.String())
		}
	})
	log.WaitFor(t, "daemon serving")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The daemon's own work, over the mesh.
	hc := &http.Client{Transport: &http.Transport{DialContext: client.Dial}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://100.64.0.1:8080/status", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "ok ticks=") {
		t.Errorf("status page: %q", body)
	}

	// SSH with the default session layer, checking the host key it made.
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ssh_host_ed25519_key"))
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := client.Dial(ctx, "tcp", "100.64.0.1:22")
	if err != nil {
		t.Fatal(err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, "100.64.0.1:22", &ssh.ClientConfig{
		User: me.Username, HostKeyCallback: ssh.FixedHostKey(hostKey.PublicKey()), Timeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	sshc := ssh.NewClient(sc, chans, reqs)
	defer sshc.Close()
	sess, err := sshc.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output("id -un")
	if err != nil || strings.TrimSpace(string(out)) != me.Username {
		t.Fatalf("ssh id -un: %q, %v", out, err)
	}

	// SIGTERM while a session runs: it finishes, then the daemon exits 0.
	sess, err = sshc.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var sessOut strings.Builder
	sess.Stdout = &sessOut
	if err := sess.Start("sleep 1; echo finished"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := sess.Wait(); err != nil || sessOut.String() != "finished\n" {
		t.Errorf("session open during SIGTERM: %q, %v; want it to finish", sessOut.String(), err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Errorf("daemon after SIGTERM: %v; want exit 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not exit within 20 s of SIGTERM")
	}
	if !strings.Contains(log.String(), "stopped") {
		t.Errorf("no graceful stop in the log")
	}
}
