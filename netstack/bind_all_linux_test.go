package netstack_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
)

// TestAllAddressesBothFamilies: on Linux, a node without a BindAddress
// listens on one dual-stack socket of our own; peers reach it over IPv4 and
// over IPv6 loopback at once, and each keeps its identity.
func TestAllAddressesBothFamilies(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		testkit.SkipOrFail(t, fmt.Sprintf("no IPv6 loopback here: %v", err))
	} else {
		c.Close()
	}
	k0, k4, k6 := newKey(t), newKey(t), newKey(t)
	srv, err := netstack.New(netstack.Config{ // no BindAddress: all addresses
		PrivateKey: k0,
		Addresses:  []netip.Prefix{pfx("100.64.0.1/32")},
		Peers: []netstack.Peer{
			{PublicKey: k4.Public(), AllowedIPs: []netip.Prefix{pfx("100.64.0.4/32")}},
			{PublicKey: k6.Public(), AllowedIPs: []netip.Prefix{pfx("100.64.0.6/32")}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !netstack.DualStack(srv) {
		t.Fatalf("the all-addresses socket is not our dual-stack bind")
	}
	l, err := srv.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	acc := acceptAll(t, l)
	for _, c := range []struct {
		key  meshkey.Private
		addr string
		via  netip.Addr
	}{{k4, "100.64.0.4/32", netip.MustParseAddr("127.0.0.1")}, {k6, "100.64.0.6/32", netip.IPv6Loopback()}} {
		cl := newNode(t, netstack.Config{
			PrivateKey:  c.key,
			BindAddress: c.via,
			Addresses:   []netip.Prefix{pfx(c.addr)},
			Peers: []netstack.Peer{{PublicKey: k0.Public(), AllowedIPs: []netip.Prefix{pfx("100.64.0.1/32")},
				Endpoint: netip.AddrPortFrom(c.via, srv.ListenPort())}},
		})
		conn, err := cl.Dial(testCtx(t, 15*time.Second), "tcp", "100.64.0.1:7")
		if err != nil {
			t.Fatalf("over %v: %v", c.via, err)
		}
		sc := acc.next(t, 10*time.Second)
		k, _ := srv.PeerForAddr(remoteAddr(t, sc))
		fmt.Fprintf(sc, "%s\n", k)
		sc.Close()
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if want := c.key.Public().String() + "\n"; err != nil || line != want {
			t.Errorf("over %v the server saw peer %q (%v); want %q", c.via, line, err, want)
		}
	}
}
