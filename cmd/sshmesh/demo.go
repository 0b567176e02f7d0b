package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

// cmdDemo shows the whole path on one machine, as an ordinary user: keys
// and configs in a temp dir, a server node in this process, and the stock
// ssh client logging in through `sshmesh nc` with no SSH key anywhere.
func cmdDemo(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("demo", "[--keep]", io)
	keep := fs.Bool("keep", false, "keep the temp dir with the keys, configs and policy")
	verbose := fs.Bool("v", false, "show the server's log")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	out := io.out
	step := func(format string, a ...any) { fmt.Fprintf(out, "\n==> "+format+"\n", a...) }
	sshPath, err := exec.LookPath("ssh")
	if err != nil {
		return errors.New("the demo drives the stock OpenSSH client, and there is no `ssh` on PATH; install it (Debian/Ubuntu: apt-get install openssh-client) and run the demo again")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	me, err := user.Current()
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "sshmesh-demo-")
	if err != nil {
		return err
	}
	if *keep {
		defer fmt.Fprintf(out, "\nkept %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	step("1. Make a WireGuard key pair for a server node and a client node (like `wg genkey`)")
	serverKey, _ := meshkey.NewPrivate()
	clientKey, _ := meshkey.NewPrivate()
	fmt.Fprintf(out, "    server public key %s\n    client public key %s\n", serverKey.Public(), clientKey.Public())

	step("2. Write wg-quick configs: both nodes on 127.0.0.1 UDP, mesh addresses 100.64.0.1 and 100.64.0.2")
	sport, cport, err := freeUDPPorts()
	if err != nil {
		return err
	}
	serverConf := filepath.Join(dir, "server.conf")
	clientConf := filepath.Join(dir, "client.conf")
	if err := writeDemoFile(serverConf, fmt.Sprintf(`[Interface]
PrivateKey = %s
Address = 100.64.0.1/32
ListenPort = %d

[Peer]
PublicKey = %s
AllowedIPs = 100.64.0.2/32
Endpoint = 127.0.0.1:%d
`, serverKey.Base64(), sport, clientKey.Public(), cport)); err != nil {
		return err
	}
	if err := writeDemoFile(clientConf, fmt.Sprintf(`[Interface]
PrivateKey = %s
Address = 100.64.0.2/32

[Peer]
PublicKey = %s
AllowedIPs = 100.64.0.1/32
Endpoint = 127.0.0.1:%d
`, clientKey.Base64(), serverKey.Public(), sport)); err != nil {
		return err
	}
	fmt.Fprintf(out, "    %s\n    %s\n", serverConf, clientConf)

	step("3. Write a policy: the client's owner may log in as their own name (%q); any other name is refused", me.Username)
	policyPath := filepath.Join(dir, "policy.hujson")
	users := `"="` // "=" never maps to root: root must be named
	if me.Username == "root" {
		users = `"=", "root"`
	}
	policyText := fmt.Sprintf(`{
  "nodes": {
    "demo-server": {"key": %q, "tags": ["tag:demo"]},
    "my-laptop":   {"key": %q, "owner": "%s@demo.example"},
  },
  "tagOwners": {"tag:demo": ["%s@demo.example"]},
  "ssh": [
    // "=" is the local part of the caller's owner: %s
    {"action": "accept", "src": ["my-laptop"], "dst": ["tag:demo"], "users": [%s]},
    {"action": "reject", "src": ["*"], "dst": ["tag:demo"], "users": ["*"],
     "message": "only your own account is open on this demo server"},
  ],
  "tests": [
    {"src": "my-laptop", "dst": "demo-server", "accept": [%q], "deny": ["operator"]},
  ],
}
`, serverKey.Public(), clientKey.Public(), me.Username, me.Username, me.Username, users, me.Username)
	if err := writeDemoFile(policyPath, policyText); err != nil {
		return err
	}
	doc, err := policy.Load(policyPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s", indent(policyText))

	step("4. Start the server node in this process: WireGuard and TCP/IP in userspace, SSH on 100.64.0.1:22")
	logLevel := slog.LevelError
	if *verbose {
		logLevel = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(io.err, &slog.HandlerOptions{Level: logLevel}))
	node, err := startNode(serverConf, io.err, logger)
	if err != nil {
		return err
	}
	defer node.Close()
	hostKey, err := sshmesh.LoadOrCreateHostKey(filepath.Join(dir, "ssh_host_ed25519_key"))
	if err != nil {
		return err
	}
	ln, err := node.Listen("tcp", ":22")
	if err != nil {
		return err
	}
	srv := &sshmesh.Server{Policy: doc, HostKeys: []ssh.Signer{hostKey}, Logger: logger}
	go srv.Serve(ln)
	defer srv.Close()
	knownHosts := filepath.Join(dir, "known_hosts")
	line := sshmesh.KnownHostsLine(hostKey.PublicKey(), 22, node.Addresses()...)
	if err := writeDemoFile(knownHosts, line+"\n"); err != nil {
		return err
	}
	fmt.Fprintf(out, "    no port opened on the host: UDP %d only\n    known_hosts: %s\n", sport, line)

	sshArgs := func(login, command string) []string {
		return []string{"-F", "/dev/null",
			"-o", "ProxyCommand=" + self + " nc --wg " + clientConf + " %h %p",
			"-o", "UserKnownHostsFile=" + knownHosts, "-o", "StrictHostKeyChecking=yes",
			"-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "IdentityAgent=none", "-o", "IdentitiesOnly=yes",
			login + "@100.64.0.1", command}
	}
	run := func(login, command string) (string, string, int) {
		args := sshArgs(login, command)
		fmt.Fprintf(out, "    $ ssh -o ProxyCommand='sshmesh nc --wg client.conf %%h %%p' %s@100.64.0.1 '%s'\n", login, command)
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, sshPath, args...)
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			code = -1
			se.WriteString(err.Error())
		}
		return so.String(), se.String(), code
	}

	step("5. Log in with the stock ssh client through `sshmesh nc` (a userspace mesh node in the ssh process): no SSH key anywhere")
	stdout, stderr, code := run(me.Username, `echo "hello from $(hostname) as $(id -un), over the mesh"; exit 7`)
	fmt.Fprintf(out, "%s    exit status %d\n", indent(stdout), code)
	if code != 7 {
		return fmt.Errorf("the login did not work (exit %d): %s", code, strings.TrimSpace(stderr))
	}

	step("6. Ask for another login name: the policy refuses it, with the rule's message, and ssh exits 255")
	_, stderr, code = run("operator", "true")
	fmt.Fprintf(out, "%s    exit status %d\n", indent(stderr), code)
	if code != 255 || !strings.Contains(stderr, "only your own account") {
		return fmt.Errorf("the refused login did not show the policy's message (exit %d)", code)
	}

	step("Done: a keyless SSH login decided by the WireGuard identity. Next: README.md walks through the same step by step, on one machine or two.")
	return nil
}

func writeDemoFile(path, text string) error { return os.WriteFile(path, []byte(text), 0o600) }

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ") + "\n"
}
