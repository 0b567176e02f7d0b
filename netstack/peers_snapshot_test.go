package netstack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
)

// The keys a peer change checks are the keys it applies: a caller's slice
// changed after the check (a data race on the caller's side) cannot put an
// unchecked key — here one listed twice — into the node.
func TestPeerChangeReadsKeysOnce(t *testing.T) {
	a, b := mustKey(t).Public(), mustKey(t).Public()
	ep := netip.MustParseAddrPort("127.0.0.1:40001")
	n, err := newNode(Config{PrivateKey: mustKey(t), BindAddress: netip.MustParseAddr("127.0.0.1"),
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/32")},
		Peers:     []Peer{{PublicKey: a, Endpoint: ep, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	peers := []Peer{
		{PublicKey: a, Endpoint: ep, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}},
		{PublicKey: b, Endpoint: ep, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}},
	}
	n.mu.Lock()
	d, err := n.diffPeers("SetPeers", newPeerSlice(peers), false)
	if err != nil {
		n.mu.Unlock()
		t.Fatal(err)
	}
	peers[1].PublicKey = a // the caller's slice changes after the check
	_, err = n.applyDiff(d)
	n.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	got := n.Peers()
	if len(got) != 2 || got[0].PublicKey != a || got[1].PublicKey != b {
		t.Errorf("the node's peers are %v, %v; want %s, %s", got[0].PublicKey.Short(), got[len(got)-1].PublicKey.Short(), a.Short(), b.Short())
	}
	if k, ok := n.PeerForAddr(netip.MustParseAddr("10.0.0.2")); !ok || k != b {
		t.Errorf("10.0.0.2 belongs to %s, want %s", k.Short(), b.Short())
	}
}

// A change that alters many peers and adds one allocates states for the
// one: the changed peers keep theirs, and a block sized by them would stay
// alive as long as the new peer does.
func TestChangedPeersAllocateNoStates(t *testing.T) {
	const nPeers, rounds = 5000, 6
	n, err := newNode(Config{PrivateKey: mustKey(t), BindAddress: netip.MustParseAddr("127.0.0.1"),
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/32")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	peers := make([]Peer, nPeers)
	for i := range peers {
		var k meshkey.Public
		k[0], k[1], k[2], k[31] = byte(i), byte(i>>8), byte(i>>16), 0x40
		peers[i] = Peer{PublicKey: k, AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)}}
	}
	if err := n.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	var blocks []int
	newStates = func(k int) []peerState {
		blocks = append(blocks, k)
		return make([]peerState, k)
	}
	defer func() { newStates = func(n int) []peerState { return make([]peerState, n) } }()
	for r := range rounds {
		for i := range peers {
			peers[i].PersistentKeepalive = time.Duration(r%2+1) * time.Second
		}
		var k meshkey.Public
		k[0], k[30], k[31] = byte(r), 0xee, 0x41
		peers = append(peers, Peer{PublicKey: k})
		if err := n.SetPeers(peers); err != nil {
			t.Fatal(err)
		}
	}
	// Each round added one peer: one block of one state.
	if len(blocks) != rounds {
		t.Fatalf("%d blocks of states for %d rounds: %v", len(blocks), rounds, blocks)
	}
	for _, k := range blocks {
		if k != 1 {
			t.Errorf("a round that adds one peer and changes %d allocated a block of %d states", nPeers, k)
		}
	}
}

// Peer finds each peer by key as Peers lists it, through changes, and
// gives a copy: a caller changing its AllowedIPs changes nothing in the
// node.
func TestPeerByKey(t *testing.T) {
	n, err := newNode(Config{PrivateKey: mustKey(t), BindAddress: netip.MustParseAddr("127.0.0.1"),
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/32")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	keys := make([]meshkey.Public, 40)
	peers := make([]Peer, len(keys))
	for i := range keys {
		keys[i] = mustKey(t).Public()
		peers[i] = Peer{PublicKey: keys[i], AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 32)}}
	}
	for _, set := range [][]Peer{peers, peers[10:], append(peers[25:], peers[:5]...)} {
		if err := n.SetPeers(set); err != nil {
			t.Fatal(err)
		}
		in := map[meshkey.Public]Peer{}
		for _, p := range n.Peers() {
			in[p.PublicKey] = p
		}
		for _, k := range keys {
			got, ok := n.Peer(k)
			want, wantOK := in[k]
			if ok != wantOK || ok && (got.PublicKey != k || len(got.AllowedIPs) != 1 || got.AllowedIPs[0] != want.AllowedIPs[0]) {
				t.Fatalf("Peer(%s) = %v, %v; Peers has %v, %v", k.Short(), got, ok, want, wantOK)
			}
		}
	}
	p, _ := n.Peer(keys[0])
	p.AllowedIPs[0] = netip.MustParsePrefix("10.0.9.9/32")
	if q, _ := n.Peer(keys[0]); q.AllowedIPs[0] == p.AllowedIPs[0] {
		t.Error("a change to what Peer returned changed the node's peer")
	}
}
