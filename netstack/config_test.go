package netstack_test

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
)

// Fixed keys for config texts (not secret: test data only).
const (
	privText = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	pubText  = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	pub2Text = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
	pskText  = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE="
)

var cmpNet = cmp.Options{cmpopts.EquateComparable(netip.Prefix{}, netip.AddrPort{}, netip.Addr{}), cmpopts.IgnoreUnexported(netstack.Config{})}

func mustPub(s string) meshkey.Public {
	k, err := meshkey.ParsePublic(s)
	if err != nil {
		panic(err)
	}
	return k
}

func mustPriv(s string) meshkey.Private {
	k, err := meshkey.ParsePrivate(s)
	if err != nil {
		panic(err)
	}
	return k
}

func TestParseConfigGood(t *testing.T) {
	text := `# A wg-quick file with everything an in-process node uses.
[Interface]
PrivateKey = ` + privText + `
Address = 100.64.0.1/10, fd7a:115c:a1e0::1/48   # two at once
address = 100.64.0.9            # a bare IP means the host; keys are case-insensitive
ListenPort = 51820
MTU = 1380
DNS = 100.100.100.100
PostUp = iptables -A FORWARD -i %i -j ACCEPT; echo "# not a comment to us"
SaveConfig = true

[Peer]
# laptop
PublicKey = ` + pubText + `
PresharedKey = ` + pskText + `
AllowedIPs = 100.64.0.2/32,fd7a:115c:a1e0::2/128
AllowedIPs = 10.9.0.0/16
Endpoint = 127.0.0.1:51821
PersistentKeepalive = 25

[peer]
publickey=` + pub2Text + `
allowedips = 100.64.0.3
endpoint = [::1]:51822
persistentkeepalive = off
`
	cfg, warnings, err := netstack.ParseConfig(strings.NewReader(text), "wg0.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := netstack.Config{
		PrivateKey: mustPriv(privText),
		Addresses:  []netip.Prefix{pfx("100.64.0.1/10"), pfx("fd7a:115c:a1e0::1/48"), pfx("100.64.0.9/32")},
		ListenPort: 51820,
		MTU:        1380,
		Peers: []netstack.Peer{{
			PublicKey:           mustPub(pubText),
			PresharedKey:        mustPriv(pskText),
			AllowedIPs:          []netip.Prefix{pfx("100.64.0.2/32"), pfx("fd7a:115c:a1e0::2/128"), pfx("10.9.0.0/16")},
			Endpoint:            netip.MustParseAddrPort("127.0.0.1:51821"),
			PersistentKeepalive: 25 * time.Second,
		}, {
			PublicKey:  mustPub(pub2Text),
			AllowedIPs: []netip.Prefix{pfx("100.64.0.3/32")},
			Endpoint:   netip.MustParseAddrPort("[::1]:51822"),
		}},
	}
	if diff := cmp.Diff(want, cfg, cmpNet); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	wantWarnings := []string{
		"wg0.conf:8: DNS is used only by wg-quick to set up the OS; ignored",
		"wg0.conf:9: PostUp is used only by wg-quick to set up the OS; ignored",
		"wg0.conf:10: SaveConfig is used only by wg-quick to set up the OS; ignored",
	}
	if diff := cmp.Diff(wantWarnings, warnings); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
}

func TestParseConfigBad(t *testing.T) {
	netstack.StubResolver(t, nil)
	iface := "[Interface]\nPrivateKey = " + privText + "\n"
	// A private key one character short: its text must not be echoed.
	shortPriv := privText[:20] + privText[21:]
	for _, tc := range []struct {
		name, text string
		want       string
		line       int
		key        string
	}{
		{"bad allowed IP", iface + "[Peer]\nPublicKey = " + pubText + "\nAllowedIPs = 10.0.0.1/32, 10.0.0.300/32\n",
			`server.conf:5: AllowedIPs: "10.0.0.300/32" is not an IP prefix`, 5, "AllowedIPs"},
		{"empty list item", iface + "[Peer]\nPublicKey = " + pubText + "\nAllowedIPs = 10.0.0.1/32,,10.0.0.2/32\n",
			`server.conf:5: AllowedIPs: empty item in the comma-separated list`, 5, "AllowedIPs"},
		{"bad address", iface + "Address = 100.64.0.1/33\n",
			`server.conf:3: Address: "100.64.0.1/33" is not an IP address or prefix`, 3, "Address"},
		{"bad port", iface + "ListenPort = 70000\n",
			`server.conf:3: ListenPort: "70000" is not a port number (0-65535)`, 3, "ListenPort"},
		{"bad mtu", iface + "MTU = 9\n",
			`server.conf:3: MTU: "9" is not an MTU (576-65535)`, 3, "MTU"},
		{"unknown interface key", iface + "Colour = blue\n",
			`server.conf:3: Colour: unknown key in [Interface]`, 3, "Colour"},
		{"peer key in interface", iface + "Endpoint = 127.0.0.1:1\n",
			`server.conf:3: Endpoint: belongs in a [Peer] section, not [Interface]`, 3, "Endpoint"},
		{"unknown peer key", iface + "[Peer]\nPublicKey = " + pubText + "\nDNS = 1.1.1.1\n",
			`server.conf:5: DNS: unknown key in [Peer]`, 5, "DNS"},
		{"interface key in peer", iface + "[Peer]\nListenPort = 1\n",
			`server.conf:4: ListenPort: belongs in the [Interface] section, not [Peer]`, 4, "ListenPort"},
		{"short private key", "[Interface]\n\n# key\nPrivateKey = " + shortPriv + "\n",
			`server.conf:4: PrivateKey: meshkey: private key is 43 characters of text, want 44 (base64 of 32 bytes, as ` + "`wg genkey`" + ` prints)`, 4, "PrivateKey"},
		{"non-base64 private key", "[Interface]\nPrivateKey = " + strings.Replace(privText, "F", "!", 1) + "\n",
			`server.conf:2: PrivateKey: meshkey: private key is not valid base64 (bad character at offset 6)`, 2, "PrivateKey"},
		{"bad preshared key", iface + "[Peer]\nPublicKey = " + pubText + "\nPresharedKey = " + pskText[:43] + "\n",
			`server.conf:5: PresharedKey: meshkey: preshared key is 43 characters of text, want 44 (base64 of 32 bytes, as ` + "`wg genkey`" + ` prints)`, 5, "PresharedKey"},
		{"bad public key", iface + "[Peer]\nPublicKey = abc\n",
			`server.conf:4: PublicKey: meshkey: public key is 3 characters of text, want 44 (base64 of 32 bytes, as ` + "`wg pubkey`" + ` prints)`, 4, "PublicKey"},
		{"prefix in two peers", iface + "[Peer]\nPublicKey = " + pubText + "\nAllowedIPs = 10.0.0.1/32, 10.0.1.0/24\n\n[Peer]\nPublicKey = " + pub2Text + "\nAllowedIPs = 10.0.1.7/24\n",
			`server.conf:9: AllowedIPs: 10.0.1.0/24 is also in the [Peer] at line 3; WireGuard routes a prefix to one peer`, 9, "AllowedIPs"},
		{"peer listed twice", iface + "[Peer]\nPublicKey = " + pubText + "\n[Peer]\nPublicKey = " + pubText + "\n",
			`server.conf:6: PublicKey: peer ` + mustPub(pubText).Short() + ` is also the [Peer] at line 3`, 6, "PublicKey"},
		{"peer without key", iface + "[Peer]\nAllowedIPs = 10.0.0.1/32\n",
			`server.conf:3: PublicKey: missing in [Peer]`, 3, "PublicKey"},
		{"no private key", "[Interface]\nListenPort = 1\n",
			`server.conf:1: PrivateKey: missing in [Interface]`, 1, "PrivateKey"},
		{"no interface", "# nothing\n",
			`server.conf: no [Interface] section`, 0, ""},
		{"endpoint host unknown", iface + "[Peer]\nPublicKey = " + pubText + "\nEndpoint = vpn.example.com:51820\n",
			`server.conf:5: Endpoint: "vpn.example.com:51820": cannot resolve host "vpn.example.com": no such host (test resolver)`, 5, "Endpoint"},
		{"endpoint host bad port", iface + "[Peer]\nPublicKey = " + pubText + "\nEndpoint = vpn.example.com:wg\n",
			`server.conf:5: Endpoint: "vpn.example.com:wg": port "wg" is not a number from 1 to 65535`, 5, "Endpoint"},
		{"endpoint without port", iface + "[Peer]\nPublicKey = " + pubText + "\nEndpoint = 10.0.0.1\n",
			`server.conf:5: Endpoint: "10.0.0.1" is not IP:port, [IPv6]:port or host:port`, 5, "Endpoint"},
		{"endpoint v6 without brackets", iface + "[Peer]\nPublicKey = " + pubText + "\nEndpoint = fd00::1:51820\n",
			`server.conf:5: Endpoint: "fd00::1:51820" is not IP:port, [IPv6]:port or host:port`, 5, "Endpoint"},
		{"endpoint port 0", iface + "[Peer]\nPublicKey = " + pubText + "\nEndpoint = 10.0.0.1:0\n",
			`server.conf:5: Endpoint: "10.0.0.1:0" has port 0`, 5, "Endpoint"},
		{"bad keepalive", iface + "[Peer]\nPublicKey = " + pubText + "\nPersistentKeepalive = 1m\n",
			`server.conf:5: PersistentKeepalive: "1m" is not a number of seconds (0-65535) or "off"`, 5, "PersistentKeepalive"},
		{"unknown section", iface + "[Peers]\n",
			`server.conf:3: unknown section [Peers]; want [Interface] or [Peer]`, 3, ""},
		{"unclosed section", "[Interface\n",
			`server.conf:1: section header "[Interface" lacks its closing ]`, 1, ""},
		{"key outside section", "ListenPort = 1\n",
			`server.conf:1: ListenPort: outside any section; put it under [Interface] or [Peer]`, 1, "ListenPort"},
		{"no equals", iface + "ListenPort 51820\n",
			`server.conf:3: want Key = Value, a [Section] or a # comment`, 3, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := netstack.ParseConfig(strings.NewReader(tc.text), "server.conf")
			if err == nil {
				t.Fatalf("ParseConfig succeeded: %+v", cfg)
			}
			if diff := cmp.Diff(tc.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			var ce *netstack.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error is %T, want *netstack.ConfigError", err)
			}
			type where struct {
				File, Key string
				Line      int
			}
			if diff := cmp.Diff(where{"server.conf", tc.key, tc.line}, where{ce.File, ce.Key, ce.Line}); diff != "" {
				t.Errorf("ConfigError (-want +got):\n%s", diff)
			}
			for _, secret := range []string{privText, shortPriv, pskText, pskText[:43], privText[:16]} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error echoes a secret key: %v", err)
				}
			}
		})
	}
}

// TestEndpointHostName: a host name in Endpoint is resolved once, while
// the file is parsed (as `wg setconf` does); the node keeps the address.
func TestEndpointHostName(t *testing.T) {
	netstack.StubResolver(t, map[string][]netip.Addr{
		"vpn.example.com": {netip.MustParseAddr("::ffff:127.0.0.9"), netip.MustParseAddr("::1")},
		"v6.example.com":  {netip.MustParseAddr("::1")},
	})
	for host, want := range map[string]string{"vpn.example.com": "127.0.0.9:51820", "v6.example.com": "[::1]:51820"} {
		text := "[Interface]\nPrivateKey = " + privText + "\n[Peer]\nPublicKey = " + pubText + "\nEndpoint = " + host + ":51820\n"
		cfg, _, err := netstack.ParseConfig(strings.NewReader(text), "server.conf")
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		if got := cfg.Peers[0].Endpoint.String(); got != want {
			t.Errorf("%s resolved to %s, want %s (the first address, unmapped)", host, got, want)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.conf")
	if err := os.WriteFile(path, []byte("[Interface]\nPrivateKey = "+privText+"\nAddress = 10.0.0.1\nPeer = x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := netstack.LoadConfig(path)
	if want := path + ":4: Peer: unknown key in [Interface]"; err == nil || err.Error() != want {
		t.Errorf("LoadConfig = %v, want %s", err, want)
	}
	if _, _, err := netstack.LoadConfig(filepath.Join(t.TempDir(), "missing.conf")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadConfig(missing) = %v, want ErrNotExist", err)
	}
}

// TestKeysWithWG round-trips key text through the real wg tool.
func TestKeysWithWG(t *testing.T) {
	wg := testkit.NeedBinary(t, "wg", "wireguard-tools")
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(wg, args...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("wg %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	// wg's key, our public key.
	wgPriv := run("", "genkey")
	priv, err := meshkey.ParsePrivate(wgPriv)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := priv.Public().String(), run(wgPriv+"\n", "pubkey"); got != want {
		t.Errorf("public key of wg genkey's key: ours %s, wg pubkey %s", got, want)
	}
	// Our key, wg's public key, through a config file.
	mine := newKey(t)
	wgPub := run(mine.Base64()+"\n", "pubkey")
	cfg, _, err := netstack.ParseConfig(strings.NewReader("[Interface]\nPrivateKey = "+mine.Base64()+"\n[Peer]\nPublicKey = "+wgPub+"\n"), "k.conf")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Peers[0].PublicKey != mine.Public() {
		t.Errorf("wg pubkey of our key parses as %s, want %s", cfg.Peers[0].PublicKey, mine.Public())
	}
	// A preshared key from wg genpsk.
	if _, err := meshkey.ParsePrivate(run("", "genpsk")); err != nil {
		t.Errorf("wg genpsk: %v", err)
	}
}

// FuzzParseConfig: ParseConfig never panics, every error names the file,
// and no error echoes a private key's text.
func FuzzParseConfig(f *testing.F) {
	f.Add("[Interface]\nPrivateKey = " + privText + "\nAddress = 10.0.0.1/24\n[Peer]\nPublicKey = " + pubText + "\nAllowedIPs = 10.0.0.2/32\nEndpoint = 127.0.0.1:51820\n")
	f.Add("[Interface]\nPrivateKey = " + privText[:40] + "\n")
	f.Add("[peer]\n#x\nallowedips=,\n")
	f.Fuzz(func(t *testing.T, text string) {
		cfg, warnings, err := netstack.ParseConfig(strings.NewReader(text), "fuzz.conf")
		if err != nil {
			if !cfg.PrivateKey.IsZero() || cfg.Addresses != nil || cfg.Peers != nil || warnings != nil {
				t.Errorf("error %v came with a config", err)
			}
			if !strings.HasPrefix(err.Error(), "fuzz.conf") {
				t.Errorf("error does not name the file: %v", err)
			}
			var ce *netstack.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error is %T, want *netstack.ConfigError", err)
			}
			// The error about a key line never echoes the key's value.
			lines := strings.Split(text, "\n")
			if ce.Line > 0 && ce.Line <= len(lines) {
				k, v, ok := strings.Cut(strings.SplitN(lines[ce.Line-1], "#", 2)[0], "=")
				v = strings.TrimSpace(v)
				if !ok || len(v) < 4 {
					return
				}
				switch strings.ToLower(strings.TrimSpace(k)) {
				case "privatekey", "presharedkey":
					if strings.Contains(err.Error(), v) {
						t.Errorf("error echoes a secret: %v", err)
					}
				}
			}
			return
		}
		if cfg.PrivateKey.IsZero() {
			t.Error("config without a private key")
		}
		for _, w := range warnings {
			if !strings.HasPrefix(w, "fuzz.conf:") {
				t.Errorf("warning does not name file:line: %s", w)
			}
		}
	})
}
