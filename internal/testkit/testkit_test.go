package testkit_test

import (
	"fmt"
	"net/netip"
	"os/user"
	"strings"
	"sync"
	"testing"

	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
)

// TestWGQuickParses: what WGQuick writes is what netstack.ParseConfig reads.
func TestWGQuickParses(t *testing.T) {
	c := testkit.WGQuick{Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}, ListenPort: 51820,
		Peers: []testkit.WGPeer{{AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")},
			Endpoint: netip.MustParseAddrPort("127.0.0.1:51821")}}}
	k, err := meshkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	c.PrivateKey, c.Peers[0].PublicKey = k, k.Public()
	cfg, _, err := netstack.ParseConfig(strings.NewReader(c.String()), "t.conf")
	if err != nil {
		t.Fatalf("ParseConfig: %v\n%s", err, c)
	}
	if cfg.PrivateKey != k || cfg.ListenPort != 51820 || len(cfg.Addresses) != 1 || len(cfg.Peers) != 1 ||
		cfg.Peers[0].Endpoint != c.Peers[0].Endpoint || cfg.Peers[0].AllowedIPs[0] != c.Peers[0].AllowedIPs[0] {
		t.Errorf("parsed %+v from:\n%s", cfg, c)
	}
}

// TestBuffer: writers and readers at once (run with -race), and WaitFor.
func TestBuffer(t *testing.T) {
	var b testkit.Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { fmt.Fprintf(&b, "line %d\n", i); _ = b.String() })
	}
	wg.Wait()
	b.WaitFor(t, "line 7\n")
	b.Logger().Debug("hello")
	b.WaitFor(t, "msg=hello")
}

// TestNewUser: the user exists during the test and is gone after it, with
// its group and home.
func TestNewUser(t *testing.T) {
	for _, opt := range []testkit.UserOptions{{}, {Shell: "/bin/sh", Group: true}, {RootAlias: true}} {
		var u *testkit.User
		t.Run(fmt.Sprintf("%+v", opt), func(t *testing.T) {
			u = testkit.NewUser(t, opt)
			if _, err := user.Lookup(u.Name); err != nil {
				t.Fatal(err)
			}
			if opt.RootAlias != (u.UID == 0 && u.Home == "/root") || opt.Group != (u.Group != "") {
				t.Errorf("options %+v made %+v", opt, u)
			}
		})
		if u == nil {
			continue // skipped
		}
		if _, err := user.Lookup(u.Name); err == nil {
			t.Errorf("user %s left behind", u.Name)
		}
		if u.Group != "" {
			if _, err := user.LookupGroup(u.Group); err == nil {
				t.Errorf("group %s left behind", u.Group)
			}
		}
	}
}
