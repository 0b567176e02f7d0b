package netstack_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
)

// Two nodes in one process over loopback UDP: B dials A's listener, and A
// learns who calls from the conn itself (a *netstack.Conn knows its peer),
// or, in an HTTP handler, from Node.WhoIs(r.RemoteAddr): no SSH package
// needed to know the caller of any protocol on the mesh.
func ExampleNew() {
	keyA, _ := meshkey.NewPrivate()
	keyB, _ := meshkey.NewPrivate()
	loopback := netip.MustParseAddr("127.0.0.1")

	a, err := netstack.New(netstack.Config{
		PrivateKey:  keyA,
		Addresses:   []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
		BindAddress: loopback,
		Peers: []netstack.Peer{{
			PublicKey:  keyB.Public(),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()

	b, err := netstack.New(netstack.Config{
		PrivateKey:  keyB,
		Addresses:   []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")},
		BindAddress: loopback,
		Peers: []netstack.Peer{{
			PublicKey:  keyA.Public(),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
			Endpoint:   netip.AddrPortFrom(loopback, a.ListenPort()),
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	l, err := a.Listen("tcp", ":22")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := b.Dial(ctx, "tcp", "100.64.0.1:22")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	s, err := l.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	caller := s.(*netstack.Conn).PeerKey()
	key, ok := a.WhoIs(s.RemoteAddr().String())
	fmt.Println(s.RemoteAddr().(*net.TCPAddr).IP, caller == b.PublicKey(), ok && key == caller)
	// Output: 100.64.0.2 true true
}

// A node started from a wg-quick file takes a new version of it (on a
// reload) through ParseUpdate and ApplyUpdate: only the [Peer] sections
// that changed are parsed, and only the peers that changed are touched.
func ExampleNode_ParseUpdate() {
	key, _ := meshkey.NewPrivate()
	peer1, _ := meshkey.NewPrivate()
	peer2, _ := meshkey.NewPrivate()
	file := func(addr2 string) []byte {
		return fmt.Appendf(nil, "[Interface]\nPrivateKey = %s\nAddress = 100.64.0.1/32\n\n"+
			"[Peer]\nPublicKey = %s\nAllowedIPs = 100.64.0.2/32\n\n"+
			"[Peer]\nPublicKey = %s\nAllowedIPs = %s\n",
			key.Base64(), peer1.Public(), peer2.Public(), addr2)
	}
	cfg, _, err := netstack.ParseConfigBytes(file("100.64.0.3/32"), "wg0.conf")
	if err != nil {
		log.Fatal(err)
	}
	cfg.BindAddress = netip.MustParseAddr("127.0.0.1")
	node, err := netstack.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()

	// The second peer moves to another address.
	u, err := node.ParseUpdate(file("100.64.0.9/32"), "wg0.conf")
	if err != nil {
		log.Fatal(err) // a *netstack.ConfigError: file, line, key
	}
	changes, err := node.ApplyUpdate(u)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(u.Parsed, len(changes.Changed))
	// And takes the first one's: refused, naming the line.
	_, err = node.ParseUpdate(file("100.64.0.2/32"), "wg0.conf")
	fmt.Println(err != nil && strings.HasPrefix(err.Error(), "wg0.conf:11: AllowedIPs: 100.64.0.2/32 is also in the [Peer] at line 5"))
	// Output:
	// 1 1
	// true
}
