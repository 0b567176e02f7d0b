package tailnet_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// The parts of a real tailnet, run on loopback only: headscale (with its
// embedded DERP and STUN on 127.0.0.1, no external DERP map, no update
// checks) and tailscaled clients in userspace networking, each with its own
// state and socket, uploading no logs. .ci/tailnet-tools builds them.

// tools are the paths of headscale, tailscaled and tailscale.
type tools struct{ headscale, tailscaled, tailscale string }

// toolsDir is where .ci/tailnet-tools caches the binaries by default; keep
// the versions in step with it and with go.mod's tailscale.com.
const toolsDir = "/var/tmp/sshmesh-tailnet-tools/headscale-v0.29.3-tailscale-v1.102.5"

// needTools returns the tools, skipping the test when they are missing (or
// failing it under CI=true).
func needTools(tb testing.TB) tools {
	tb.Helper()
	dir := os.Getenv("SSHMESH_TAILNET_TOOLS")
	if dir == "" {
		dir = toolsDir
	}
	t := tools{filepath.Join(dir, "headscale"), filepath.Join(dir, "tailscaled"), filepath.Join(dir, "tailscale")}
	for _, p := range []string{t.headscale, t.tailscaled, t.tailscale} {
		if _, err := os.Stat(p); err != nil {
			testkit.SkipOrFail(tb, fmt.Sprintf("%s is missing (build headscale and tailscaled with .ci/tailnet-tools, or set SSHMESH_TAILNET_TOOLS)", p))
		}
	}
	return t
}

// freePort returns a TCP (or UDP) port free on 127.0.0.1 just now.
func freePort(tb testing.TB, network string) int {
	tb.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// headscale is a running headscale server.
type headscale struct {
	tb     testing.TB
	bin    string
	config string
	URL    string
}

// headscaleConfig is a minimal headscale configuration for loopback: %[1]s
// is the state dir, %[2]d the HTTP port, %[3]d the gRPC port, %[4]d the
// metrics port, %[5]d the STUN port.
const headscaleConfig = `server_url: http://127.0.0.1:%[2]d
listen_addr: 127.0.0.1:%[2]d
metrics_listen_addr: 127.0.0.1:%[4]d
grpc_listen_addr: 127.0.0.1:%[3]d
grpc_allow_insecure: false
noise:
  private_key_path: %[1]s/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: true
    region_id: 999
    region_code: "headscale"
    region_name: "Headscale Embedded DERP"
    verify_clients: true
    stun_listen_addr: "127.0.0.1:%[5]d"
    private_key_path: %[1]s/derp_server_private.key
    automatically_add_embedded_derp_region: true
    ipv4: 127.0.0.1
  urls: []
  paths: []
  auto_update_enabled: false
disable_check_updates: true
node:
  expiry: 0
database:
  type: sqlite
  sqlite:
    path: %[1]s/db.sqlite
    write_ahead_log: true
log:
  level: info
  format: text
policy:
  mode: file
  path: %[1]s/policy.hujson
dns:
  magic_dns: true
  base_domain: tailnet.test
  override_local_dns: false
  nameservers:
    global: []
unix_socket: %[1]s/headscale.sock
unix_socket_permission: "0700"
logtail:
  enabled: false
`

// headscalePolicy is the coordinator's own policy: every node may reach
// every other (sshmesh's policy decides SSH on sshmesh's node), and the
// tags the tests use.
const headscalePolicy = `{
  "tagOwners": {
    "tag:server": ["alice@example.com"],
    "tag:ci":     ["alice@example.com"],
    "tag:other":  ["alice@example.com"],
    "tag:recorder": ["alice@example.com"],
  },
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  // For the benchmark's Tailscale SSH server (tailscaled --ssh), the same
  // logins as sshmesh's policy allows.
  "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["autogroup:nonroot"]}],
}`

// startHeadscale starts headscale on loopback ports of its own, stopped
// when the test ends.
func startHeadscale(tb testing.TB, t tools) *headscale {
	tb.Helper()
	dir, err := os.MkdirTemp("", "headscale-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	port := freePort(tb, "tcp")
	cfg := fmt.Sprintf(headscaleConfig, dir, port, freePort(tb, "tcp"), freePort(tb, "tcp"), freePort(tb, "udp"))
	h := &headscale{tb: tb, bin: t.headscale, config: filepath.Join(dir, "config.yaml"), URL: "http://127.0.0.1:" + strconv.Itoa(port)}
	if err := os.WriteFile(h.config, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.hujson"), []byte(headscalePolicy), 0o600); err != nil {
		tb.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "headscale.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(t.headscale, "-c", h.config, "serve")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		if tb.Failed() {
			b, _ := os.ReadFile(log.Name())
			tb.Logf("headscale log:\n%s", tail(b, 4000))
		}
	})
	waitFor(tb, 60*time.Second, "headscale to answer", func() error {
		_, err := h.try("users", "list")
		return err
	})
	return h
}

// try runs a headscale command with JSON output.
func (h *headscale) try(args ...string) ([]byte, error) {
	cmd := exec.Command(h.bin, append([]string{"-c", h.config, "-o", "json"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return out, fmt.Errorf("headscale %s: %v: %s%s", strings.Join(args, " "), err, out, ee.Stderr)
		}
		return out, fmt.Errorf("headscale %s: %v", strings.Join(args, " "), err)
	}
	return out, nil
}

// run runs a headscale command and decodes its JSON output into v (if v
// is not nil).
func (h *headscale) run(v any, args ...string) {
	h.tb.Helper()
	out, err := h.try(args...)
	if err != nil {
		h.tb.Fatal(err)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			h.tb.Fatalf("headscale %s: %v in %s", strings.Join(args, " "), err, out)
		}
	}
}

// createUser creates a user whose login is email and returns its id.
func (h *headscale) createUser(name, email string) uint64 {
	var u struct{ ID uint64 }
	h.run(&u, "users", "create", name, "--email", email)
	if u.ID == 0 {
		h.tb.Fatalf("headscale users create %s gave no id", name)
	}
	return u.ID
}

// authKey makes a reusable pre-auth key of user (0: none) with tags.
func (h *headscale) authKey(user uint64, tags ...string) string {
	args := []string{"preauthkeys", "create", "--reusable", "--expiration", "1h"}
	if user != 0 {
		args = append(args, "--user", strconv.FormatUint(user, 10))
	}
	if len(tags) > 0 {
		args = append(args, "--tags", strings.Join(tags, ","))
	}
	var k struct{ Key string }
	h.run(&k, args...)
	if k.Key == "" {
		h.tb.Fatalf("headscale preauthkeys create gave no key")
	}
	return k.Key
}

// nodeID returns the id of the node called name.
func (h *headscale) nodeID(name string) string {
	h.tb.Helper()
	var nodes []struct {
		ID        json.RawMessage `json:"id"`
		Name      string          `json:"name"`
		GivenName string          `json:"given_name"`
	}
	h.run(&nodes, "nodes", "list")
	for _, n := range nodes {
		if n.Name == name || n.GivenName == name {
			return strings.Trim(string(n.ID), `"`)
		}
	}
	h.tb.Fatalf("headscale knows no node %q", name)
	return ""
}

// tailscaled is a tailscaled in userspace networking, with its CLI.
type tailscaled struct {
	tb     testing.TB
	cli    string
	socket string
	socks  string // its SOCKS5 proxy into the tailnet, 127.0.0.1:PORT
	pid    int    // the tailscaled process (the benchmark reads its memory)
}

// startTailscaled starts a tailscaled of its own (state, socket, no TUN,
// no log upload) and logs it in to h with authKey as hostname.
func startTailscaled(tb testing.TB, t tools, h *headscale, hostname, authKey string, upFlags ...string) *tailscaled {
	tb.Helper()
	dir, err := os.MkdirTemp("", "tailscaled-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	d := &tailscaled{tb: tb, cli: t.tailscale, socket: filepath.Join(dir, "tailscaled.sock"),
		socks: "127.0.0.1:" + strconv.Itoa(freePort(tb, "tcp"))}
	log, err := os.Create(filepath.Join(dir, "tailscaled.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(t.tailscaled, "--tun=userspace-networking", "--no-logs-no-support",
		"--statedir="+filepath.Join(dir, "state"), "--socket="+d.socket, "--port=0", "--socks5-server="+d.socks)
	cmd.Env = append(os.Environ(), "TS_NO_LOGS_NO_SUPPORT=true", "TS_LOGS_DIR="+dir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	d.pid = cmd.Process.Pid
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		if tb.Failed() {
			b, _ := os.ReadFile(log.Name())
			tb.Logf("tailscaled %s log:\n%s", hostname, tail(b, 3000))
		}
	})
	// The socket file appears when tailscaled binds it, a moment before
	// it listens (a connect in between is refused): wait for a connect.
	waitFor(tb, 30*time.Second, "tailscaled to listen", func() error {
		c, err := net.Dial("unix", d.socket)
		if err == nil {
			c.Close()
		}
		return err
	})
	d.run(append([]string{"up", "--login-server=" + h.URL, "--authkey=" + authKey, "--hostname=" + hostname, "--accept-dns=false", "--timeout=90s"}, upFlags...)...)
	return d
}

// run runs the tailscale CLI against d.
func (d *tailscaled) run(args ...string) string {
	d.tb.Helper()
	out, err := exec.Command(d.cli, append([]string{"--socket=" + d.socket}, args...)...).CombinedOutput()
	if err != nil {
		d.tb.Fatalf("tailscale %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ip4 is d's own tailnet IPv4 address.
func (d *tailscaled) ip4() string {
	return strings.TrimSpace(d.run("ip", "-4"))
}

// proxyCommand is the ssh ProxyCommand that reaches %h:%p over d.
func (d *tailscaled) proxyCommand() string {
	return d.cli + " --socket=" + d.socket + " nc %h %p"
}

func waitFor(tb testing.TB, limit time.Duration, what string, f func() error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("waited %v for %s: %v", limit, what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// program is a running sshmesh-tailnet.
type program struct {
	host string // its tailnet IPv4 address, from its ready line
	pid  int
	stop func() // SIGTERM, then (after 20 s) SIGKILL; waits for the end
}

// startProgram builds sshmesh-tailnet and runs it with args, as a node of
// h tagged tag (by its auth key; --control-url, --auth-key-file and
// --state are added), until its stdout prints a line matching ready,
// whose first group is its tailnet IPv4 address. It is stopped when the
// test ends, and its log shown if the test failed.
func startProgram(tb testing.TB, h *headscale, tag, ready string, args ...string) *program {
	tb.Helper()
	return startProgramBin(tb, h, "", nil, tag, ready, args...)
}

// startProgramBin is startProgram running the sshmesh-tailnet binary bin
// (built from this tree when bin is empty) with env added to its
// environment.
func startProgramBin(tb testing.TB, h *headscale, bin string, env []string, tag, ready string, args ...string) *program {
	tb.Helper()
	dir := tb.TempDir()
	if bin == "" {
		bin = filepath.Join(dir, "sshmesh-tailnet")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/sshmesh-tailnet").CombinedOutput(); err != nil {
			tb.Fatalf("go build ./cmd/sshmesh-tailnet: %v\n%s", err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "authkey"), []byte(h.authKey(0, tag)), 0o600); err != nil {
		tb.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "program.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, append(args, "--control-url", h.URL,
		"--auth-key-file", filepath.Join(dir, "authkey"), "--state", filepath.Join(dir, "state"))...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stderr = log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p := &program{pid: cmd.Process.Pid}
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
	}
	tb.Cleanup(func() {
		p.stop()
		log.Close()
		if tb.Failed() {
			b, _ := os.ReadFile(log.Name())
			tb.Logf("sshmesh-tailnet %s log:\n%s", args[0], tail(b, 3000))
		}
	})
	re := regexp.MustCompile(ready)
	ip := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				ip <- m[1]
			}
		}
		close(ip)
	}()
	select {
	case host, ok := <-ip:
		if !ok {
			tb.Fatalf("sshmesh-tailnet %s ended without saying it was ready", args[0])
		}
		p.host = host
		return p
	case <-time.After(3 * time.Minute):
		tb.Fatalf("sshmesh-tailnet %s did not say it was ready within 3 minutes", args[0])
	}
	return nil
}
