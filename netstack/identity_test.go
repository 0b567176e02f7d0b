package netstack_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

// TestIdentity runs three real nodes: the source address of a mesh conn
// names its peer only as far as WireGuard's allowed IPs say so, and
// SetPeers changes that live.
func TestIdentity(t *testing.T) {
	ka, kb, kc := newKey(t), newKey(t), newKey(t)
	b0 := netstack.Peer{PublicKey: kb.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.2/32"), pfx("10.0.0.33/32")}}
	c0 := netstack.Peer{PublicKey: kc.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.3/32")}}
	a := newNode(t, netstack.Config{PrivateKey: ka, Addresses: []netip.Prefix{pfx("10.0.0.1/24")}, Peers: []netstack.Peer{b0, c0}})
	toA := []netstack.Peer{{PublicKey: ka.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.1/32")}, Endpoint: endpointOf(a)}}
	b := newNode(t, netstack.Config{PrivateKey: kb, Addresses: []netip.Prefix{pfx("10.0.0.2/32")}, Peers: toA})
	// C's own address lies outside the allowed IPs A holds for C (in B's).
	c := newNode(t, netstack.Config{PrivateKey: kc, Addresses: []netip.Prefix{pfx("10.0.0.33/32")}, Peers: toA})
	for _, n := range []*netstack.Node{b, c} {
		if err := n.WaitHandshake(testCtx(t, 10*time.Second), ka.Public()); err != nil {
			t.Fatal(err)
		}
	}
	l, err := a.Listen("tcp", ":22")
	if err != nil {
		t.Fatal(err)
	}
	acc := acceptAll(t, l)
	peerOf := func(addr string) string {
		k, ok := a.PeerForAddr(netip.MustParseAddr(addr))
		switch {
		case !ok:
			return "none"
		case k == kb.Public():
			return "B"
		case k == kc.Public():
			return "C"
		}
		return k.Short()
	}
	// dialFails checks that n cannot reach A's listener and the listener
	// sees nothing.
	dialFails := func(t *testing.T, n *netstack.Node) {
		t.Helper()
		conn, err := n.Dial(testCtx(t, 1500*time.Millisecond), "tcp", "10.0.0.1:22")
		if err == nil {
			conn.Close()
			t.Fatal("dial succeeded")
		}
		select {
		case s := <-acc.conns:
			t.Fatalf("listener accepted %v", s.RemoteAddr())
		default:
		}
	}
	// dialAs checks that n reaches A's listener and A resolves want.
	dialAs := func(t *testing.T, n *netstack.Node, want string) {
		t.Helper()
		conn, err := n.Dial(testCtx(t, 10*time.Second), "tcp", "10.0.0.1:22")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		s := acc.next(t, 10*time.Second)
		if got := peerOf(remoteAddr(t, s).String()); got != want {
			t.Fatalf("accepted conn from %v resolves to %s, want %s", remoteAddr(t, s), got, want)
		}
	}

	// B's long-lived conn, which must keep working throughout.
	bConn, err := b.Dial(testCtx(t, 10*time.Second), "tcp", "10.0.0.1:22")
	if err != nil {
		t.Fatal(err)
	}
	defer bConn.Close()
	bSrv := acc.next(t, 10*time.Second)
	echo(bSrv)
	if got := peerOf(remoteAddr(t, bSrv).String()); got != "B" {
		t.Fatalf("B's conn resolves to %s", got)
	}
	bStillWorks := func(t *testing.T) {
		t.Helper()
		if err := roundTrip(bConn, "B's conn is still up\n", 10*time.Second); err != nil {
			t.Fatalf("B's established conn: %v", err)
		}
	}
	bStillWorks(t)

	t.Run("source outside allowed IPs is dropped", func(t *testing.T) {
		if got := peerOf("10.0.0.33"); got != "B" {
			t.Fatalf("PeerForAddr(10.0.0.33) = %s, want B", got)
		}
		dialFails(t, c)
	})

	t.Run("moving a prefix moves the identity", func(t *testing.T) {
		b1 := netstack.Peer{PublicKey: kb.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.2/32")}}
		c1 := netstack.Peer{PublicKey: kc.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.3/32"), pfx("10.0.0.33/32")}}
		if err := a.SetPeers([]netstack.Peer{b1, c1}); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]netstack.Peer{b1, c1}, a.Peers(), cmpopts.EquateComparable(netip.Prefix{}, netip.AddrPort{})); diff != "" {
			t.Errorf("Peers (-want +got):\n%s", diff)
		}
		if got := peerOf("10.0.0.33"); got != "C" {
			t.Fatalf("PeerForAddr(10.0.0.33) = %s, want C", got)
		}
		dialAs(t, c, "C")
		bStillWorks(t)
	})

	t.Run("a removed peer cannot connect; others go on", func(t *testing.T) {
		b2 := netstack.Peer{PublicKey: kb.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.2/32")}}
		if err := a.SetPeers([]netstack.Peer{b2}); err != nil {
			t.Fatal(err)
		}
		if got := peerOf("10.0.0.33"); got != "none" {
			t.Fatalf("PeerForAddr(10.0.0.33) = %s after removing C", got)
		}
		dialFails(t, c)
		bStillWorks(t)
		dialAs(t, b, "B")
	})

	t.Run("SetPeers refuses a prefix given to two peers", func(t *testing.T) {
		err := a.SetPeers([]netstack.Peer{
			{PublicKey: kb.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.0/24")}},
			{PublicKey: kc.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.9/24")}},
		})
		want := "netstack: SetPeers: prefix 10.0.0.0/24 is given to two peers, " + kb.Public().Short() + " ([0]) and " + kc.Public().Short() + " ([1]); WireGuard routes a prefix to one peer"
		if err == nil || err.Error() != want {
			t.Fatalf("SetPeers = %v, want %s", err, want)
		}
		if got := peerOf("10.0.0.2"); got != "B" {
			t.Errorf("a refused SetPeers changed the table: 10.0.0.2 → %s", got)
		}
		bStillWorks(t)
	})
}

// TestDormantPeerKeepsItsAddress: a hub's peer entry holds 10.0.0.0/24 and
// a dormant peer D (no endpoint, so off the WireGuard device until it
// writes) holds 10.0.0.5/32 inside it. The hub sends from D's address: the
// device takes those packets under the hub's /24, but a device that held
// every peer would drop them (D's /32 is the longer prefix), and so does
// the node: no conn is accepted, and none would be served as D. The hub's
// own addresses stay the hub's, and D itself, once it connects, is D.
// Whether D is dormant from the start or added by SetPeers, the answer is
// the same.
func TestDormantPeerKeepsItsAddress(t *testing.T) {
	for _, added := range []bool{false, true} {
		name := "dormant from the start"
		if added {
			name = "dormant peer added by SetPeers"
		}
		t.Run(name, func(t *testing.T) {
			ka, kh, kd := newKey(t), newKey(t), newKey(t)
			hub := netstack.Peer{PublicKey: kh.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.0/24")}}
			dormant := netstack.Peer{PublicKey: kd.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.5/32")}}
			peers := []netstack.Peer{hub, dormant}
			if added {
				peers = peers[:1]
			}
			a := newNode(t, netstack.Config{PrivateKey: ka, Addresses: []netip.Prefix{pfx("10.0.1.1/32")}, Peers: peers})
			l, err := a.Listen("tcp", ":22")
			if err != nil {
				t.Fatal(err)
			}
			acc := acceptAll(t, l)
			toA := []netstack.Peer{{PublicKey: ka.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.1.1/32")}, Endpoint: endpointOf(a)}}
			// The hub's node, with a source address of choice.
			hubFrom := func(addr string) *netstack.Node {
				n, err := netstack.New(netstack.Config{PrivateKey: kh, BindAddress: loopback, Addresses: []netip.Prefix{pfx(addr + "/32")}, Peers: toA})
				if err != nil {
					t.Fatal(err)
				}
				if err := n.WaitHandshake(testCtx(t, 10*time.Second), ka.Public()); err != nil {
					t.Fatal(err)
				}
				return n
			}
			// served dials A from n, giving up after within: long where the
			// conn must be served (a loaded machine can take seconds), short
			// where it must not (the dial then waits out the time).
			served := func(n *netstack.Node, within time.Duration) (string, bool) {
				t.Helper()
				conn, err := n.Dial(testCtx(t, within), "tcp", "10.0.1.1:22")
				if err != nil {
					select {
					case s := <-acc.conns:
						t.Fatalf("the dial failed, but the listener accepted %v", s.RemoteAddr())
					default:
					}
					return "", false
				}
				defer conn.Close()
				s := acc.next(t, 10*time.Second)
				k, ok := a.PeerForAddr(remoteAddr(t, s))
				switch {
				case !ok:
					return "none", true
				case k == kh.Public():
					return "hub", true
				case k == kd.Public():
					return "D", true
				}
				return k.Short(), true
			}

			if added {
				// Before D is listed, its address is the hub's.
				h := hubFrom("10.0.0.5")
				if who, ok := served(h, 10*time.Second); !ok || who != "hub" {
					t.Fatalf("before D is listed: hub's conn from 10.0.0.5 served as %q (accepted %v), want hub", who, ok)
				}
				h.Close()
				if err := a.SetPeers([]netstack.Peer{hub, dormant}); err != nil {
					t.Fatal(err)
				}
			}
			if k, ok := a.PeerForAddr(netip.MustParseAddr("10.0.0.5")); !ok || k != kd.Public() {
				t.Fatalf("PeerForAddr(10.0.0.5) = %v, %v; D owns it", k.Short(), ok)
			}
			h := hubFrom("10.0.0.5")
			if who, ok := served(h, 1500*time.Millisecond); ok {
				t.Fatalf("the hub's conn from the dormant peer's address was accepted and resolves to %s", who)
			}
			h.Close()
			h = hubFrom("10.0.0.7")
			if who, ok := served(h, 10*time.Second); !ok || who != "hub" {
				t.Fatalf("hub's conn from its own 10.0.0.7 served as %q (accepted %v), want hub", who, ok)
			}
			h.Close()
			d := newNode(t, netstack.Config{PrivateKey: kd, Addresses: []netip.Prefix{pfx("10.0.0.5/32")}, Peers: toA})
			if err := d.WaitHandshake(testCtx(t, 10*time.Second), ka.Public()); err != nil {
				t.Fatal(err)
			}
			if who, ok := served(d, 10*time.Second); !ok || who != "D" {
				t.Fatalf("D's own conn served as %q (accepted %v), want D", who, ok)
			}
		})
	}
}

// TestConnKnowsItsPeer: a node's listener hands out *netstack.Conn that
// carry the peer's key (no wrapping needed), Dial returns one for the
// peer owning the destination, and WhoIs answers from a remote address
// string as net/http gives it.
func TestConnKnowsItsPeer(t *testing.T) {
	ka, kb := newKey(t), newKey(t)
	a := newNode(t, netstack.Config{PrivateKey: ka, Addresses: []netip.Prefix{pfx("10.0.0.1/32")},
		Peers: []netstack.Peer{{PublicKey: kb.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.2/32")}}}})
	b := newNode(t, netstack.Config{PrivateKey: kb, Addresses: []netip.Prefix{pfx("10.0.0.2/32")},
		Peers: []netstack.Peer{{PublicKey: ka.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.1/32")}, Endpoint: endpointOf(a)}}})
	l, err := a.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	if nk, ok := l.(interface{ NodeKey() meshkey.Public }); !ok || nk.NodeKey() != ka.Public() {
		t.Errorf("listener NodeKey: %v", ok)
	}
	acc := acceptAll(t, l)
	dc, err := b.Dial(testCtx(t, 10*time.Second), "tcp", "10.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if mc, ok := dc.(*netstack.Conn); !ok || mc.PeerKey() != ka.Public() || mc.NodeKey() != kb.Public() {
		t.Errorf("dialed conn %T: want a *netstack.Conn to A from B", dc)
	}
	c := acc.next(t, 10*time.Second)
	mc, ok := c.(*netstack.Conn)
	if !ok {
		t.Fatalf("accepted conn is a %T, want *netstack.Conn", c)
	}
	if mc.PeerKey() != kb.Public() || mc.NodeKey() != ka.Public() || !mc.PeerCurrent() {
		t.Errorf("accepted conn: peer %v node %v current %v", mc.PeerKey().Short(), mc.NodeKey().Short(), mc.PeerCurrent())
	}
	for _, addr := range []string{c.RemoteAddr().String(), "10.0.0.2", "[::ffff:10.0.0.2]:1234"} {
		if k, ok := a.WhoIs(addr); !ok || k != kb.Public() {
			t.Errorf("WhoIs(%q) = %v, %v; want B", addr, k.Short(), ok)
		}
	}
	for _, addr := range []string{"10.0.0.9:80", "not an address", ""} {
		if k, ok := a.WhoIs(addr); ok {
			t.Errorf("WhoIs(%q) = %v, want no peer", addr, k.Short())
		}
	}
	if err := a.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	if mc.PeerCurrent() {
		t.Error("PeerCurrent still true after the peer was removed")
	}
}

// A node answers policy.WhoIs's questions.
var _ policy.AddrResolver = (*netstack.Node)(nil)

// TestPeerStatus: a node reports its peers as wg show would: the one that
// connected with its endpoint, a handshake and traffic; the one that never
// wrote as dormant.
func TestPeerStatus(t *testing.T) {
	ka, kb, kc := newKey(t), newKey(t), newKey(t)
	a := newNode(t, netstack.Config{PrivateKey: ka, Addresses: []netip.Prefix{pfx("10.0.0.1/32")}, Peers: []netstack.Peer{
		{PublicKey: kb.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.2/32")}},
		{PublicKey: kc.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.3/32")}},
	}})
	b := newNode(t, netstack.Config{PrivateKey: kb, Addresses: []netip.Prefix{pfx("10.0.0.2/32")},
		Peers: []netstack.Peer{{PublicKey: ka.Public(), AllowedIPs: []netip.Prefix{pfx("10.0.0.1/32")}, Endpoint: endpointOf(a)}}})
	if err := b.WaitHandshake(testCtx(t, 10*time.Second), ka.Public()); err != nil {
		t.Fatal(err)
	}
	// The responder counts the handshake once the initiator's first
	// packet after it arrives.
	if err := a.WaitHandshake(testCtx(t, 10*time.Second), kb.Public()); err != nil {
		t.Fatal(err)
	}
	st, err := a.PeerStatus()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 {
		t.Fatalf("PeerStatus: %+v", st)
	}
	if p := st[0]; p.PublicKey != kb.Public() || p.Dormant || p.LastHandshake.IsZero() || p.RxBytes == 0 || p.Endpoint != endpointOf(b) {
		t.Errorf("the peer that connected: %+v", p)
	}
	if p := st[1]; p.PublicKey != kc.Public() || !p.Dormant || !p.LastHandshake.IsZero() || p.Endpoint.IsValid() {
		t.Errorf("the dormant peer: %+v", p)
	}
}
