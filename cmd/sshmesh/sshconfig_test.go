package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/meshkey"
)

func TestConfigWord(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"/usr/local/bin/sshmesh", "/usr/local/bin/sshmesh", ""},
		{"/Users/Jane Doe/mesh.conf", `"/Users/Jane Doe/mesh.conf"`, ""},
		{"/tmp/a$b", "", "cannot go into an ssh config"},
		{"/tmp/100%", "", "cannot go into an ssh config"},
		{`/tmp/"x"`, "", "cannot go into an ssh config"},
	} {
		got, err := configWord(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("configWord(%q): err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("configWord(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestSSHConfigOutput: without a policy, hosts are named by their mesh
// addresses (no HostKeyAlias); ports other than the defaults show up; a
// peer with only a wider prefix gets no Host block.
func TestSSHConfigOutput(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "client.conf")
	key, err := meshkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	peer1, _ := meshkey.NewPrivate()
	peer2, _ := meshkey.NewPrivate()
	os.WriteFile(conf, []byte(fmt.Sprintf(`[Interface]
PrivateKey = %s
Address = 100.64.0.2/32

[Peer]
PublicKey = %s
AllowedIPs = 100.64.0.1/32, fd7a::1/128

[Peer]
PublicKey = %s
AllowedIPs = 10.0.0.0/24
`, key.Base64(), peer1.Public(), peer2.Public())), 0o600)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"ssh-config", "--wg", conf, "--port", "2222", "--hostkeys-port", "5000", "--sshmesh", "/opt/my bin/sshmesh"},
		stdio{strings.NewReader(""), &out, &errOut})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	got := out.String()
	for _, want := range []string{
		"Host 100.64.0.1 fd7a::1\n\tHostName 100.64.0.1\n\tPort 2222\n",
		"\tProxyCommand \"/opt/my bin/sshmesh\" nc --wg " + conf + " %h %p\n",
		"\tKnownHostsCommand \"/opt/my bin/sshmesh\" known-hosts --wg " + conf + " --port 5000 %h %H\n",
		"# peer " + peer2.Public().String() + ": no single-address AllowedIPs",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "HostKeyAlias") {
		t.Errorf("HostKeyAlias without a policy:\n%s", got)
	}
}
