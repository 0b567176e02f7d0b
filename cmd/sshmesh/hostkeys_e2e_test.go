package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestSSHConfigKnownHosts: the stock ssh with a config from `sshmesh
// ssh-config` (KnownHostsCommand `sshmesh known-hosts`) logs in by node
// name with StrictHostKeyChecking=yes and no known_hosts file, negotiates
// AES-GCM, follows the server to a new host key without a warning, and
// refuses an SSH server that the mesh did not vouch for.
func TestSSHConfigKnownHosts(t *testing.T) {
	sshBin := sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	bash := sshmeshtest.NeedBinary(t, "bash", "bash")
	f := newServiceFixture(t) // the client may log in as this user
	dir, serverConf, clientConf, polPath := f.dir, f.serverConf, f.clientConf, f.polPath
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}

	cfg, errOut, code := tool{}.run(t, binPath, "ssh-config", "--wg", clientConf, "--policy", polPath, "--sshmesh", binPath)
	if code != 0 {
		t.Fatalf("ssh-config: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"Host srv 100.64.0.1\n", "\tHostKeyAlias srv\n", "\tStrictHostKeyChecking yes\n",
		"\tKnownHostsCommand " + binPath + " known-hosts --wg " + clientConf + " %h %H\n",
		"\tCiphers aes128-gcm@openssh.com,"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("ssh-config output lacks %q:\n%s", want, cfg)
		}
	}
	cfgPath := filepath.Join(dir, "ssh_config")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)

	login := func(t *testing.T, extra ...string) (stdout, stderr string, code int) {
		t.Helper()
		args := append([]string{"-F", cfgPath, "-v", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"}, noAgent...)
		args = append(append(args, extra...), me.Username+"@srv", "echo in-by-name")
		start := time.Now()
		stdout, stderr, code = tool{}.run(t, sshBin, args...)
		took := time.Since(start)
		t.Logf("ssh took %v", took.Round(time.Millisecond))
		// known-hosts asks nc's node. A node of its own, with nc's key,
		// would take over the WireGuard session and stall the login for
		// about 40 s (measured).
		if took > 20*time.Second {
			t.Errorf("ssh took %v: did known-hosts bring up a second node with nc's key?", took.Round(time.Second))
		}
		return stdout, stderr, code
	}
	hostKeyLine := regexp.MustCompile(`Server host key: (ssh-ed25519 SHA256:\S+)`)
	verified := func(t *testing.T, stdout, stderr string, code int) string {
		t.Helper()
		if code != 0 || stdout != "in-by-name\n" {
			t.Fatalf("ssh srv: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
		}
		for _, want := range []string{"Host 'srv' is known and matches the ED25519 host key.", "Found key in KnownHostsCommand-HOSTNAME",
			"kex: server->client cipher: aes128-gcm@openssh.com"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("ssh -v does not say %q:\n%s", want, stderr)
			}
		}
		for _, bad := range []string{"WARNING", "authenticity", "Permanently added"} {
			if strings.Contains(stderr, bad) {
				t.Errorf("ssh -v says %q:\n%s", bad, stderr)
			}
		}
		logHostKeyLines(t, stderr)
		fp := hostKeyLine.FindStringSubmatch(stderr)
		if fp == nil {
			t.Fatalf("no server host key in:\n%s", stderr)
		}
		return fp[1]
	}

	var log1 sshmeshtest.Buffer
	serve := startServe(t, &log1, nil, "--wg", serverConf, "--policy", polPath, "--hostkey", filepath.Join(dir, "hostkey1"), "--check-port", "0")
	o, e, c := login(t)
	key1 := verified(t, o, e, c)
	t.Logf("first key: %s", key1)

	// Reinstalled: a new host key. The next login follows it silently.
	serve.Process.Signal(os.Interrupt)
	serve.Wait()
	var log2 sshmeshtest.Buffer
	startServe(t, &log2, nil, "--wg", serverConf, "--policy", polPath, "--hostkey", filepath.Join(dir, "hostkey2"), "--check-port", "0")
	o, e, c = login(t)
	key2 := verified(t, o, e, c)
	if key1 == key2 {
		t.Fatalf("the host key did not change: %s", key2)
	}

	// A man in the middle: ssh still asks about srv (HostName the mesh
	// address) but its ProxyCommand reaches another SSH server, on plain
	// loopback TCP. known-hosts fetches srv's keys over the mesh; the
	// impostor's key is not among them.
	mitm := fakeSSHServer(t)
	proxy := fmt.Sprintf("ProxyCommand=%s -c 'exec 3<>/dev/tcp/127.0.0.1/%d; cat <&3 2>/dev/null & exec cat >&3'", bash, mitm.Port)
	_, stderr, code := login(t, "-o", proxy)
	logHostKeyLines(t, stderr)
	if code != 255 || !strings.Contains(stderr, "Host key verification failed") {
		t.Errorf("through an impostor: exit %d; want 255 and a failed host key verification:\n%s", code, stderr)
	}
}

// logHostKeyLines logs what ssh -v says about the host key check.
func logHostKeyLines(t *testing.T, stderr string) {
	t.Helper()
	for _, l := range strings.Split(stderr, "\n") {
		for _, k := range []string{"KnownHostsCommand", "host key", "Host key", "known and matches", "cipher:", "IDENTIFICATION", "Offending"} {
			if strings.Contains(l, k) {
				t.Log(l)
				break
			}
		}
	}
}

// fakeSSHServer serves SSH on 127.0.0.1 with a host key of its own and
// lets anyone in (none auth), for the impostor of a test.
func fakeSSHServer(t *testing.T) *net.TCPAddr {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	conf := &ssh.ServerConfig{NoClientAuth: true}
	conf.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// The relay's reading half outlives ssh; end it soon.
				c.SetDeadline(time.Now().Add(10 * time.Second))
				sc, chans, reqs, err := ssh.NewServerConn(c, conf)
				if err != nil {
					return
				}
				t.Errorf("the ssh client logged in to the impostor")
				go ssh.DiscardRequests(reqs)
				for ch := range chans {
					ch.Reject(ssh.Prohibited, "impostor")
				}
				sc.Close()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}
