package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestServeStatus: `sshmesh status` lists a running serve's peers (named by
// the policy, with their handshake) and a live session with its caller,
// login and local user; another local user cannot read it.
func TestServeStatus(t *testing.T) {
	f := newServiceFixture(t)
	state := filepath.Join(f.dir, "state")
	var log sshmeshtest.Buffer
	startServe(t, &log, nil, f.serveArgs("--state", state)...)

	open := exec.Command(sshmeshtest.NeedBinary(t, "ssh", "openssh-client"),
		append(append(meshClientOptions(f.clientConf), noAgent...), f.login, "echo open; sleep 60")...)
	out, _ := open.StdoutPipe()
	if err := open.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { open.Process.Kill(); open.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "open\n" {
		t.Fatalf("session printed %q", line)
	}

	got, err := exec.Command(binPath, "status", "--state", state, "--json").Output()
	if err != nil {
		t.Fatalf("status --json: %v", err)
	}
	var r statusReport
	if err := json.Unmarshal(got, &r); err != nil {
		t.Fatalf("status --json printed %s: %v", got, err)
	}
	if r.Node.Name != "srv" || len(r.Peers) != 1 || r.Peers[0].Name != "laptop" || r.Peers[0].LastHandshake == nil || r.Peers[0].RxBytes == 0 {
		t.Errorf("node and peers: %+v %+v", r.Node, r.Peers)
	}
	if len(r.Conns) != 1 {
		t.Fatalf("conns: %+v", r.Conns)
	}
	c := r.Conns[0]
	me, _ := user.Current()
	if c.Node != "laptop" || c.User != me.Username || c.LocalUser != me.Username || c.Rule != "ssh[0]" ||
		len(c.Sessions) != 1 || c.Sessions[0].Kind != "exec" || c.Sessions[0].Command != "echo open; sleep 60" {
		t.Errorf("conn: %+v", c)
	}
	text, err := exec.Command(binPath, "status", "--state", state).Output()
	t.Logf("sshmesh status:\n%s", text)
	if err != nil || !strings.Contains(string(text), "laptop") || !strings.Contains(string(text), "exec echo open; sleep 60") {
		t.Errorf("status: %v\n%s", err, text)
	}

	// Another local user: refused by the kernel (the socket is 0600 in a
	// 0700 directory).
	if os.Geteuid() == 0 {
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(nobody.Uid)
		gid, _ := strconv.Atoi(nobody.Gid)
		// A copy of the binary that nobody may run (the test's is in a
		// directory only root can enter), so that only the socket refuses.
		binDir, err := os.MkdirTemp("/tmp", "sshmesh-status-bin-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(binDir) })
		os.Chmod(binDir, 0o755)
		bin, _ := os.ReadFile(binPath)
		nobodyBin := filepath.Join(binDir, "sshmesh")
		if err := os.WriteFile(nobodyBin, bin, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(nobodyBin, "status", "--state", state)
		runAs(cmd, uid, gid)
		out, err := cmd.CombinedOutput()
		if err == nil || strings.Contains(string(out), "laptop") || !strings.Contains(string(out), "only the user sshmesh serve runs as, and root, may read its status") {
			t.Errorf("nobody and the status: %v\n%s; want a refusal by permissions", err, out)
		}
	}
}
