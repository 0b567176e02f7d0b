package netstack_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/netip"
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
