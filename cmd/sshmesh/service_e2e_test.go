package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// serviceFixture is a server and a client node, the server's wg-quick file
// (with a key only wg-quick uses, which serve warns about) and a policy
// that lets the client log in as the current user.
type serviceFixture struct {
	server, client                  *sshmeshtest.Node
	serverConf, clientConf, polPath string
	pol, login                      string
	dir                             string
}

func newServiceFixture(t *testing.T) *serviceFixture {
	t.Helper()
	m := sshmeshtest.NewMesh(t, 2)
	f := &serviceFixture{server: m.Nodes[0], client: m.Nodes[1], dir: t.TempDir()}
	for _, n := range m.Nodes {
		n.Node.Close()
	}
	f.serverConf = filepath.Join(f.dir, "server.conf")
	text := strings.Replace(serverWGQuick(f.server, f.client).String(), "[Interface]\n", "[Interface]\nDNS = 100.100.100.100\n", 1)
	if err := os.WriteFile(f.serverConf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	f.clientConf = f.client.WriteWGQuick(t, filepath.Join(f.dir, "client.conf"))
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	f.login = me.Username + "@" + f.server.Addr.String()
	f.pol = fmt.Sprintf(`{
  "nodes": {
    "srv": {"key": %q, "tags": ["tag:server"]},
    "laptop": {"key": %q, "owner": "%s@example.com"},
  },
  "tagOwners": {"tag:server": ["%s@example.com"]},
  "ssh": [{"action": "accept", "src": ["laptop"], "dst": ["tag:server"], "users": ["root", "="]}],
}`, f.server.Key.Public(), f.client.Key.Public(), me.Username, me.Username)
	f.polPath = filepath.Join(f.dir, "policy.hujson")
	if err := os.WriteFile(f.polPath, []byte(f.pol), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *serviceFixture) serveArgs(extra ...string) []string {
	return append([]string{"--wg", f.serverConf, "--policy", f.polPath, "--hostkey", filepath.Join(f.dir, "hostkey"), "--port", "22", "--check-port", "0"}, extra...)
}

// TestServeJSONLog: with --log-format json, every line serve writes, on
// stdout and on stderr, is a JSON event: the start and known_hosts lines,
// the wg-quick file's warnings, a login, reloads good and bad, and the
// shutdown.
func TestServeJSONLog(t *testing.T) {
	f := newServiceFixture(t)
	var stdout, stderr sshmeshtest.Buffer
	cmd := startServe(t, &stderr, func(c *exec.Cmd) { c.Stdout = &stdout }, f.serveArgs("--log-format", "json")...)
	stderr.WaitFor(t, `"msg":"known_hosts"`)
	if _, errOut, code := stockSSH(t, f.clientConf, f.login, "true"); code != 0 {
		t.Errorf("login: exit %d, %s", code, errOut)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitCount(t, &stderr, `"msg":"reloaded"`, 1)
	os.WriteFile(f.polPath, []byte(`{"ssh": [`), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	waitCount(t, &stderr, `"msg":"reload failed`, 1)
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve: %v", err)
	}

	msgs := map[string]map[string]any{}
	for name, out := range map[string]string{"stdout": stdout.String(), "stderr": stderr.String()} {
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("%s: a line that is not JSON: %q", name, sc.Text())
				continue
			}
			msg, _ := ev["msg"].(string)
			msgs[strings.SplitN(msg, ":", 2)[0]] = ev
		}
	}
	if ev := msgs["serving SSH"]; ev == nil || ev["node"] != "srv" || ev["port"] != 22.0 || fmt.Sprint(ev["addrs"]) != "[100.64.0.1]" {
		t.Errorf("start event: %v", ev)
	}
	if ev := msgs["known_hosts"]; ev == nil || !strings.HasPrefix(fmt.Sprint(ev["line"]), "100.64.0.1 ssh-ed25519 ") {
		t.Errorf("known_hosts event: %v", ev)
	}
	if ev := msgs["wg-quick file"]; ev == nil || ev["level"] != "WARN" {
		t.Errorf("no warning event for the wg-quick file's DNS key: %v", ev)
	}
	if ev := msgs["reload failed; the previous peers and policy stay in force"]; ev == nil || ev["file"] != f.polPath || ev["line"] != 1.0 {
		t.Errorf("failed reload event: %v", ev)
	}
	for _, m := range []string{"reloaded", "session start", "shutting down"} {
		if msgs[m] == nil {
			t.Errorf("no %q event; got %v", m, msgs)
		}
	}
}

// TestServeNotify runs serve as systemd's Type=notify would: with
// NOTIFY_SOCKET naming a unixgram socket the test reads. READY=1 comes once
// the mesh and the SSH listener are up (a login works then), a SIGHUP
// brings RELOADING=1 (with MONOTONIC_USEC) then READY=1, also when the
// reload fails, and SIGINT STOPPING=1.
func TestServeNotify(t *testing.T) {
	f := newServiceFixture(t)
	sockDir, err := os.MkdirTemp("", "sd") // short: a socket path has ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "notify")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	next := func() string {
		t.Helper()
		pc.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 4096)
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	reloading := regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*$`)
	if runtime.GOOS != "linux" { // systemd's clock is read on Linux only
		reloading = regexp.MustCompile(`^RELOADING=1$`)
	}
	var log sshmeshtest.Buffer
	cmd := startServe(t, &log, func(c *exec.Cmd) { c.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock) }, f.serveArgs()...)
	if got := next(); got != "READY=1" {
		t.Fatalf("first notification %q; want READY=1", got)
	}
	if _, errOut, code := stockSSH(t, f.clientConf, f.login, "true"); code != 0 {
		t.Errorf("login after READY=1: exit %d, %s", code, errOut)
	}
	for _, pol := range []string{f.pol, `{"ssh": [`} { // a good reload, then a bad one
		os.WriteFile(f.polPath, []byte(pol), 0o600)
		cmd.Process.Signal(syscall.SIGHUP)
		if got := next(); !reloading.MatchString(got) {
			t.Errorf("on SIGHUP: %q; want RELOADING=1 and MONOTONIC_USEC", got)
		}
		if got := next(); got != "READY=1" {
			t.Errorf("after the reload: %q; want READY=1", got)
		}
	}
	// The log lines come through serve's stderr pipe, maybe after the
	// datagram: wait for them.
	log.WaitFor(t, "msg=reloaded")
	log.WaitFor(t, "reload failed")
	cmd.Process.Signal(os.Interrupt)
	if got := next(); got != "STOPPING=1" {
		t.Errorf("on SIGINT: %q; want STOPPING=1", got)
	}
}
