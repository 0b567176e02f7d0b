package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

// sshCiphers puts AES-GCM first: Go's runs about 10× faster than
// x/crypto's ChaCha20 on CPUs with AES instructions, and the client's order
// decides.
const sshCiphers = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"

func cmdSSHConfig(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("ssh-config", "--wg CONF [--policy FILE] [--port 22] [--hostkeys-port N]", io)
	wgPath := fs.String("wg", "", "wg-quick `file` of this (client) node (required)")
	policyPath := fs.String("policy", "", "policy `file`: name the hosts after its nodes")
	port := fs.Uint("port", 22, "the servers' SSH `port`")
	hostKeysPort := fs.Uint("hostkeys-port", DefaultHostKeysPort, "the servers' host key `port` (serve --hostkeys-port)")
	bin := fs.String("sshmesh", "", "`path` of the sshmesh binary in the commands (default: this one's)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *wgPath == "" || fs.NArg() != 0 || *port == 0 || *port > 65535 || *hostKeysPort == 0 || *hostKeysPort > 65535 {
		fs.Usage()
		return errUsage
	}
	cfg, _, err := netstack.LoadConfig(*wgPath)
	if err != nil {
		return err
	}
	var doc *policy.Document
	if *policyPath != "" {
		if doc, err = policy.Load(*policyPath); err != nil {
			return err
		}
	}
	if *bin == "" {
		if *bin, err = os.Executable(); err != nil {
			return fmt.Errorf("locating the sshmesh binary (give --sshmesh): %w", err)
		}
	}
	conf, err := filepath.Abs(*wgPath)
	if err != nil {
		return err
	}
	qbin, err := configWord(*bin)
	if err != nil {
		return fmt.Errorf("--sshmesh: %w", err)
	}
	qconf, err := configWord(conf)
	if err != nil {
		return fmt.Errorf("--wg: %w", err)
	}
	khFlags := ""
	if *hostKeysPort != DefaultHostKeysPort {
		khFlags = " --port " + strconv.Itoa(int(*hostKeysPort))
	}

	fmt.Fprintf(io.out, "# sshmesh ssh-config for the mesh of %s.\n", conf)
	fmt.Fprintf(io.out, "# Include this file from ~/.ssh/config. Host keys come over the mesh (KnownHostsCommand),\n")
	fmt.Fprintf(io.out, "# authenticated by the WireGuard session; no known_hosts file is read or written for these hosts.\n")
	for _, p := range cfg.Peers {
		var addrs []netip.Addr
		for _, pfx := range p.AllowedIPs {
			if pfx.IsSingleIP() {
				addrs = append(addrs, pfx.Addr())
			}
		}
		if len(addrs) == 0 {
			fmt.Fprintf(io.out, "\n# peer %s: no single-address AllowedIPs, so no host to name\n", p.PublicKey)
			continue
		}
		name := ""
		if doc != nil {
			if id, ok := doc.Node(p.PublicKey); ok {
				name = id.Node
			}
		}
		var patterns []string
		if name != "" {
			patterns = append(patterns, name)
		}
		for _, a := range addrs {
			patterns = append(patterns, a.String())
		}
		fmt.Fprintf(io.out, "\n# peer %s\n", p.PublicKey)
		fmt.Fprintf(io.out, "Host %s\n", strings.Join(patterns, " "))
		fmt.Fprintf(io.out, "\tHostName %s\n", addrs[0])
		if *port != 22 {
			fmt.Fprintf(io.out, "\tPort %d\n", *port)
		}
		if name != "" {
			// One name for the host key whichever pattern matched.
			fmt.Fprintf(io.out, "\tHostKeyAlias %s\n", name)
		}
		fmt.Fprintf(io.out, "\tProxyCommand %s nc --wg %s %%h %%p\n", qbin, qconf)
		fmt.Fprintf(io.out, "\tKnownHostsCommand %s known-hosts --wg %s%s %%h %%H\n", qbin, qconf, khFlags)
		fmt.Fprintf(io.out, "\tUserKnownHostsFile /dev/null\n")
		fmt.Fprintf(io.out, "\tGlobalKnownHostsFile /dev/null\n")
		fmt.Fprintf(io.out, "\tStrictHostKeyChecking yes\n")
		fmt.Fprintf(io.out, "\tCheckHostIP no\n")
		fmt.Fprintf(io.out, "\tUpdateHostKeys no\n")
		fmt.Fprintf(io.out, "\tCiphers %s\n", sshCiphers)
	}
	return nil
}

// configWord returns s as one word of an ssh_config command (ProxyCommand
// goes through /bin/sh; KnownHostsCommand is split by ssh itself): bare
// when plain, else double-quoted; it refuses what neither quotes the same.
func configWord(s string) (string, error) {
	s = filepath.ToSlash(s) // Windows: ssh takes / and would read \ as an escape
	if s == "" {
		return "", fmt.Errorf("empty path")
	}
	if strings.ContainsAny(s, "\"\\$`%!\n\r\t'") {
		return "", fmt.Errorf("%q: a path with quotes, backslashes, $, `, %%, ! or control characters cannot go into an ssh config", s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._+-=:,@", r)) {
			return `"` + s + `"`, nil
		}
	}
	return s, nil
}
