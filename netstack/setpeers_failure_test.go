package netstack

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// refusingBind refuses endpoints on port 9, so that a SetPeers naming one
// fails part-way on the device, as wireguard-go's "too many peers" does at
// 65,536 peers: the peers before it in the change are applied already.
type refusingBind struct{ conn.Bind }

func (b refusingBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if strings.HasSuffix(s, ":9") {
		return nil, errors.New("refused (test)")
	}
	return b.Bind.ParseEndpoint(s)
}

// deviceOwner returns the hex key of the device's peer whose allowed IPs
// hold a (the longest match), "" if none.
func deviceOwner(n *Node, a netip.Addr) string {
	cur, owner, best := "", "", -1
	n.deviceLines(func(line string) bool {
		if k, ok := strings.CutPrefix(line, "public_key="); ok {
			cur = k
		}
		if v, ok := strings.CutPrefix(line, "allowed_ip="); ok {
			if p := netip.MustParsePrefix(v); p.Contains(a) && p.Bits() > best {
				best, owner = p.Bits(), cur
			}
		}
		return true
	})
	return owner
}

// failingChange is a change of peers W, Z, H whose last new peer the
// device refuses: 10.0.0.2 moves from W to Z and a new peer B takes
// 10.0.1.7 inside H's /24 before it.
func failingChange(t *testing.T, w, z, h Peer) []Peer {
	ep := netip.MustParseAddrPort
	z2, w2 := z, w
	z2.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.0.0.3/32"), netip.MustParsePrefix("10.0.0.2/32")}
	w2.AllowedIPs = nil
	b := Peer{PublicKey: mustKey(t).Public(), Endpoint: ep("127.0.0.1:40004"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.1.7/32")}}
	x := Peer{PublicKey: mustKey(t).Public(), Endpoint: ep("127.0.0.1:9"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.2.1/32")}}
	return []Peer{z2, w2, h, b, x}
}

// TestFailedSetPeersRestoresTheDevice: a SetPeers the device refuses
// part-way leaves the device as it was, so the device (which decides who
// may send from an address) and the table (which says who that is) agree,
// right after the failure and after the operator's revert; the device
// holds no peer of the failed change.
func TestFailedSetPeersRestoresTheDevice(t *testing.T) {
	ep := netip.MustParseAddrPort
	w := Peer{PublicKey: mustKey(t).Public(), Endpoint: ep("127.0.0.1:40001"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}}
	z := Peer{PublicKey: mustKey(t).Public(), Endpoint: ep("127.0.0.1:40002"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.3/32")}}
	h := Peer{PublicKey: mustKey(t).Public(), Endpoint: ep("127.0.0.1:40003"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}}
	n, err := newNode(Config{PrivateKey: mustKey(t), BindAddress: netip.MustParseAddr("127.0.0.1"),
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}, Peers: []Peer{w, z, h}},
		func(b conn.Bind) conn.Bind { return refusingBind{b} })
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	agree := func(when string) {
		t.Helper()
		for _, c := range []struct {
			addr string
			want Peer
		}{{"10.0.0.2", w}, {"10.0.0.3", z}, {"10.0.1.7", h}} {
			a := netip.MustParseAddr(c.addr)
			dev := deviceOwner(n, a)
			sender, ok := n.table.Load().sender(a)
			if dev != c.want.PublicKey.Hex() || !ok || sender != c.want.PublicKey {
				t.Errorf("%s: %s is on the device as %.8s, in the table as %.8s (%v); want both %.8s",
					when, c.addr, dev, sender.Hex(), ok, c.want.PublicKey.Hex())
			}
		}
		if got := len(devicePeers(t, n)); got != 3 {
			t.Errorf("%s: the device holds %d peers, want the 3 in force", when, got)
		}
	}
	if err := n.SetPeers(failingChange(t, w, z, h)); err == nil {
		t.Fatal("the change the device refuses did not fail")
	}
	agree("after the failed SetPeers")
	if err := n.SetPeers([]Peer{w, z, h}); err != nil { // the revert
		t.Fatal(err)
	}
	agree("after the revert")
}

// TestFailedSetPeersNoImpersonation: end to end, after a failed SetPeers
// that would have moved W's address to Z, and its revert, Z's node dialing
// from W's address is not served as W.
func TestFailedSetPeersNoImpersonation(t *testing.T) {
	ep := netip.MustParseAddrPort
	srvKey, zKey := mustKey(t), mustKey(t)
	w := Peer{PublicKey: mustKey(t).Public(), Endpoint: ep("127.0.0.1:40001"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}}
	z := Peer{PublicKey: zKey.Public(), Endpoint: ep("127.0.0.1:40002"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.3/32")}}
	h := Peer{PublicKey: mustKey(t).Public(), Endpoint: ep("127.0.0.1:40003"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}}
	s, err := newNode(Config{PrivateKey: srvKey, BindAddress: netip.MustParseAddr("127.0.0.1"),
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}, Peers: []Peer{w, z, h}},
		func(b conn.Bind) conn.Bind { return refusingBind{b} })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetPeers(failingChange(t, w, z, h)); err == nil {
		t.Fatal("the change the device refuses did not fail")
	}
	if err := s.SetPeers([]Peer{w, z, h}); err != nil {
		t.Fatal(err)
	}
	zNode, err := newNode(Config{PrivateKey: zKey, BindAddress: netip.MustParseAddr("127.0.0.1"),
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")},
		Peers: []Peer{{PublicKey: srvKey.Public(), Endpoint: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), s.ListenPort()),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zNode.Close()
	l, err := s.Listen("tcp", ":22")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan *Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c.(*Conn)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := zNode.Dial(ctx, "tcp", "10.0.0.1:22")
	if err != nil {
		return // refused: the device takes 10.0.0.2 from W only
	}
	defer c.Close()
	sc := <-accepted
	defer sc.Close()
	if sc.PeerKey() == w.PublicKey {
		t.Errorf("a conn from Z's key is served as W")
	}
}
