package netstack

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/sshmesh/sshmesh/meshkey"
	"golang.org/x/crypto/blake2s"
	"golang.zx2c4.com/wireguard/conn"
)

// devicePeers lists the peers n's WireGuard device holds.
func devicePeers(t *testing.T, n *Node) []string {
	t.Helper()
	var out []string
	if err := n.deviceLines(func(line string) bool {
		if k, ok := strings.CutPrefix(line, "public_key="); ok {
			out = append(out, k)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// sentInitiations is a bind that keeps a copy of every handshake
// initiation its node sends.
type sentInitiations struct {
	conn.Bind
	mu   sync.Mutex
	msgs [][]byte
}

func (s *sentInitiations) Send(bufs [][]byte, ep conn.Endpoint) error {
	s.mu.Lock()
	for _, b := range bufs {
		if len(b) == initiationSize && b[0] == initiationType {
			s.msgs = append(s.msgs, slices.Clone(b))
		}
	}
	s.mu.Unlock()
	return s.Bind.Send(bufs, ep)
}

func (s *sentInitiations) first(t *testing.T) []byte {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.msgs) == 0 {
		t.Fatal("no handshake initiation was sent")
	}
	return s.msgs[0]
}

// TestDormantPeerWakesOnItsHandshake: a server lists three peers without
// endpoints; its device holds none of them until one writes, and then
// only that one, which can connect at once (its first handshake is
// answered, not lost).
func TestDormantPeerWakesOnItsHandshake(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	ks, kc := mustKey(t), mustKey(t)
	other1, other2 := mustKey(t).Public(), mustKey(t).Public()
	srv, err := newNode(Config{
		PrivateKey: ks, BindAddress: lo,
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
		Peers: []Peer{
			{PublicKey: other1, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.3/32")}},
			{PublicKey: kc.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}},
			{PublicKey: other2, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.4/32")}},
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if got := devicePeers(t, srv); len(got) != 0 {
		t.Fatalf("the device holds %d peers before any wrote; want 0 (all dormant)", len(got))
	}
	if got := len(srv.Peers()); got != 3 {
		t.Fatalf("Peers() lists %d; want 3, dormant or not", got)
	}
	if err := srv.StartHandshake(kc.Public()); err != nil {
		t.Errorf("StartHandshake with a dormant peer: %v; want nil (nothing to do)", err)
	}

	var sent *sentInitiations
	cli, err := newNode(Config{
		PrivateKey: kc, BindAddress: lo,
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")},
		Peers: []Peer{{PublicKey: ks.Public(), Endpoint: netip.AddrPortFrom(lo, srv.ListenPort()),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}}},
	}, func(b conn.Bind) conn.Bind { sent = &sentInitiations{Bind: b}; return sent })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	l, err := srv.Listen("tcp4", ":22")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second) // under WireGuard's 5 s retry
	defer cancel()
	start := time.Now()
	c, err := cli.Dial(ctx, "tcp4", "100.64.0.1:22")
	if err != nil {
		t.Fatalf("dial a server that holds us dormant: %v", err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Logf("connected in %v", time.Since(start))
	if peer, ok := srv.PeerForAddr(s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()); !ok || peer != kc.Public() {
		t.Errorf("the conn's peer = %v, %v; want the client", peer, ok)
	}
	sent.mu.Lock()
	n := len(sent.msgs)
	sent.mu.Unlock()
	if n != 1 {
		t.Errorf("the client sent %d handshake initiations; want 1 (the first is answered)", n)
	}
	if got := devicePeers(t, srv); !slices.Equal(got, []string{kc.Public().Hex()}) {
		t.Errorf("the device holds %v; want only the client, %s", got, kc.Public().Hex())
	}
	if err := srv.WaitHandshake(ctx, kc.Public()); err != nil {
		t.Errorf("WaitHandshake with the woken peer: %v", err)
	}

	// SetPeers: a dormant peer removed and another given an endpoint, the
	// woken one kept as it is.
	peers := srv.Peers()
	var next []Peer
	for _, p := range peers {
		switch p.PublicKey {
		case other1:
			continue
		case other2:
			p.Endpoint = netip.MustParseAddrPort("127.0.0.1:9")
		}
		next = append(next, p)
	}
	if err := srv.SetPeers(next); err != nil {
		t.Fatal(err)
	}
	got := devicePeers(t, srv)
	slices.Sort(got)
	want := []string{kc.Public().Hex(), other2.Hex()}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("after SetPeers the device holds %v; want %v", got, want)
	}
	if _, err := c.Write([]byte("still here")); err != nil {
		t.Errorf("the woken peer's conn after SetPeers: %v", err)
	}
	buf := make([]byte, 10)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(buf); err != nil {
		t.Errorf("read on the woken peer's conn after SetPeers: %v", err)
	}
}

// TestResponderOpen: a real initiation, from wireguard-go, opens with the
// responder's key and names the initiator; anything altered, or sent to
// another node, does not.
func TestResponderOpen(t *testing.T) {
	var sent []*sentInitiations // a's, then b's, which sends the first initiation
	p := newDPPair(t, 1420, true, func(b conn.Bind) conn.Bind {
		s := &sentInitiations{Bind: b}
		sent = append(sent, s)
		return s
	})
	msg := sent[1].first(t)
	r, err := newResponder(p.keyA)
	if err != nil {
		t.Fatal(err)
	}
	in, ok := r.open(msg)
	if !ok || in.static != p.keyB.Public() {
		t.Fatalf("open = %v, %v; want the initiator's key %v", in.static, ok, p.keyB.Public())
	}
	if !r.authentic(in) {
		t.Fatal("the real initiation is not authentic")
	}

	other, _ := newResponder(mustKey(t))
	if _, ok := other.open(msg); ok {
		t.Error("another node opened an initiation that was not for it")
	}
	// withMac1 returns msg with byte i flipped and a valid mac1, as an
	// attacker who knows the responder's public key can make it.
	withMac1 := func(i int) []byte {
		m := slices.Clone(msg)
		m[i] ^= 1
		mac, _ := blake2s.New128(r.mac1Key[:])
		mac.Write(m[:initMac1Off])
		copy(m[initMac1Off:], mac.Sum(nil))
		return m
	}
	bad := slices.Clone(msg)
	bad[initMac1Off] ^= 1
	if _, ok := r.open(bad); ok {
		t.Error("opened with a wrong mac1")
	}
	if _, ok := r.open(withMac1(initStaticOff + 3)); ok {
		t.Error("opened with an altered static key")
	}
	if _, ok := r.open(withMac1(initEphemeralOff + 3)); ok {
		t.Error("opened with an altered ephemeral key")
	}
	in, ok = r.open(withMac1(initTimestampOff + 3))
	if !ok {
		t.Fatal("the static key did not open after the timestamp was altered")
	}
	if r.authentic(in) {
		t.Error("an altered timestamp is authentic")
	}
	zero := withMac1(0)
	zero[0] = initiationType
	clear(zero[initEphemeralOff:initStaticOff]) // a low-order point
	if _, ok := r.open(zero); ok {
		t.Error("opened with an all-zero ephemeral key")
	}
	if _, ok := r.open(msg[:len(msg)-1]); ok {
		t.Error("opened a short message")
	}
}

// TestDormantPeersCostNoGoroutines: a node listing many peers that never
// wrote runs no per-peer goroutines (the device would run two per peer).
func TestDormantPeersCostNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	peers := make([]Peer, 300)
	for i := range peers {
		a := netip.AddrFrom4([4]byte{100, 64, byte(1 + i/250), byte(1 + i%250)})
		peers[i] = Peer{PublicKey: mustKey(t).Public(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(a, 32)}}
	}
	n, err := newNode(Config{PrivateKey: mustKey(t), BindAddress: netip.MustParseAddr("127.0.0.1"),
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.254/32")}, Peers: peers}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if added := runtime.NumGoroutine() - base; added > 100 {
		t.Errorf("a node with %d dormant peers added %d goroutines", len(peers), added)
	}
	if got := devicePeers(t, n); len(got) != 0 {
		t.Errorf("the device holds %d peers; want 0", len(got))
	}
}

func TestBudget(t *testing.T) {
	b := budget{n: 3}
	t0 := time.Now()
	for i := range 3 {
		if !b.take(t0.Add(time.Duration(i) * time.Millisecond)) {
			t.Fatalf("take %d refused within the budget", i)
		}
	}
	if b.take(t0.Add(500 * time.Millisecond)) {
		t.Error("a fourth take within the second was allowed")
	}
	if !b.take(t0.Add(time.Second)) {
		t.Error("the budget did not renew after a second")
	}
}

// TestWakeBudgetOnlyForAddressed: initiations without a valid mac1 (from
// someone who does not know the node's public key) cost no X25519 and
// do not use up the budget that dormant peers' first handshakes need.
func TestWakeBudgetOnlyForAddressed(t *testing.T) {
	n, err := newNode(Config{PrivateKey: mustKey(t), BindAddress: netip.MustParseAddr("127.0.0.1"),
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
		Peers:     []Peer{{PublicKey: mustKey(t).Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	junk := make([]byte, initiationSize)
	junk[0] = initiationType
	for range 2 * wakeChecksPerSecond {
		n.wake(junk)
	}
	n.wakes.mu.Lock()
	used := n.wakes.used
	n.wakes.mu.Unlock()
	if used != 0 {
		t.Errorf("%d junk initiations used %d of the wake budget; want 0", 2*wakeChecksPerSecond, used)
	}
	// One addressed to it (a valid mac1, but a static key that does not
	// open) does use it.
	mac, _ := blake2s.New128(n.resp.mac1Key[:])
	mac.Write(junk[:initMac1Off])
	copy(junk[initMac1Off:], mac.Sum(nil))
	n.wake(junk)
	n.wakes.mu.Lock()
	used = n.wakes.used
	n.wakes.mu.Unlock()
	if used != 1 {
		t.Errorf("an addressed initiation used %d of the budget; want 1", used)
	}
}

// FuzzWake feeds arbitrary datagrams, as received and with a valid mac1
// (as anyone who knows the node's public key can make one), to the wake
// path of a node with dormant peers: none wakes a peer, none panics, and
// opening one allocates a bounded amount whatever its size.
func FuzzWake(f *testing.F) {
	ks := mustKey(f)
	var peers []Peer
	for i := range 3 {
		peers = append(peers, Peer{PublicKey: mustKey(f).Public(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 2)}), 32)}})
	}
	n, err := newNode(Config{PrivateKey: ks, BindAddress: netip.MustParseAddr("127.0.0.1"),
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}, Peers: peers}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close() })
	withMac1 := func(msg []byte) []byte {
		m := slices.Clone(msg)
		mac, _ := blake2s.New128(n.resp.mac1Key[:])
		mac.Write(m[:initMac1Off])
		copy(m[initMac1Off:], mac.Sum(nil))
		return m
	}
	f.Add([]byte{})
	f.Add([]byte{initiationType, 0, 0, 0})
	f.Add(append([]byte{initiationType, 0, 0, 0}, make([]byte, initiationSize-4)...))
	f.Add(append([]byte{initiationType, 0, 0, 0}, make([]byte, initiationSize)...))
	f.Add(append([]byte{4, 0, 0, 0}, make([]byte, 64)...)) // a data packet's header
	f.Fuzz(func(t *testing.T, msg []byte) {
		msgs := [][]byte{msg}
		if len(msg) == initiationSize {
			fixed := withMac1(msg)
			fixed[0], fixed[1], fixed[2], fixed[3] = initiationType, 0, 0, 0
			msgs = append(msgs, withMac1(fixed))
		}
		for _, m := range msgs {
			if allocs := testing.AllocsPerRun(1, func() { n.resp.open(m) }); allocs > 100 { // about 50 for a full open (X25519, AEAD)
				t.Errorf("opening a %d-byte datagram allocated %v times", len(m), allocs)
			}
			n.wake(m)
			if got := n.dormantN.Load(); got != int64(len(peers)) {
				t.Fatalf("a forged datagram woke a peer: %d dormant of %d", got, len(peers))
			}
		}
	})
}

// TestSetPeersKeepsDormancy: across SetPeers, a peer without an endpoint
// stays dormant whether changed or not, a peer given an endpoint goes on
// the device, a peer on the device stays there when it loses its
// endpoint, a removed peer is gone from the device, the node's count of
// dormant peers and PeerStatus agree with the device, and UpdatePeers
// reports exactly the peers added, removed and changed.
func TestSetPeersKeepsDormancy(t *testing.T) {
	a, b, c := mustKey(t).Public(), mustKey(t).Public(), mustKey(t).Public()
	at := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	ep := netip.MustParseAddrPort("127.0.0.1:9") // never answers; only the device's state matters
	n, err := newNode(Config{PrivateKey: mustKey(t), BindAddress: netip.MustParseAddr("127.0.0.1"),
		Addresses: at("100.64.0.1/32"),
		Peers:     []Peer{{PublicKey: a, AllowedIPs: at("100.64.0.2/32")}, {PublicKey: b, AllowedIPs: at("100.64.0.3/32"), Endpoint: ep}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	check := func(step string, wantDormant, wantDevice []meshkey.Public) {
		t.Helper()
		st, err := n.PeerStatus()
		if err != nil {
			t.Fatal(err)
		}
		var dormant []meshkey.Public
		for _, p := range st {
			if p.Dormant {
				dormant = append(dormant, p.PublicKey)
			}
		}
		sortKeys := func(ks []meshkey.Public) []meshkey.Public {
			slices.SortFunc(ks, func(x, y meshkey.Public) int { return bytes.Compare(x[:], y[:]) })
			return ks
		}
		if diff := cmp.Diff(sortKeys(slices.Clone(wantDormant)), sortKeys(dormant), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: dormant peers (-want +got):\n%s", step, diff)
		}
		if got := n.dormantN.Load(); got != int64(len(wantDormant)) {
			t.Errorf("%s: dormant count %d, want %d", step, got, len(wantDormant))
		}
		var want []string
		for _, k := range wantDevice {
			want = append(want, k.Hex())
		}
		got := devicePeers(t, n)
		slices.Sort(want)
		slices.Sort(got)
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: peers on the device (-want +got):\n%s", step, diff)
		}
	}
	check("start", []meshkey.Public{a}, []meshkey.Public{b})

	// a changes (still no endpoint), b loses its endpoint, c is new without one.
	ch, err := n.UpdatePeers([]Peer{{PublicKey: a, AllowedIPs: at("100.64.0.4/32")}, {PublicKey: b, AllowedIPs: at("100.64.0.3/32")},
		{PublicKey: c, AllowedIPs: at("100.64.0.5/32")}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(PeerChanges{Added: []meshkey.Public{c}, Changed: []meshkey.Public{a, b}}, ch, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	check("changed", []meshkey.Public{a, c}, []meshkey.Public{b})
	if k, ok := n.PeerForAddr(netip.MustParseAddr("100.64.0.4")); !ok || k != a {
		t.Errorf("100.64.0.4 resolves to %v %v, want a", k.Short(), ok)
	}

	// a gets an endpoint, b is removed, c stays dormant and unchanged.
	ch, err = n.UpdatePeers([]Peer{{PublicKey: c, AllowedIPs: at("100.64.0.5/32")}, {PublicKey: a, AllowedIPs: at("100.64.0.4/32"), Endpoint: ep}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(PeerChanges{Removed: []meshkey.Public{b}, Changed: []meshkey.Public{a}}, ch, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	check("woken and removed", []meshkey.Public{c}, []meshkey.Public{a})
	if _, ok := n.PeerForAddr(netip.MustParseAddr("100.64.0.3")); ok {
		t.Error("the removed peer's address still resolves")
	}
}

// TestUpdatePeersPatchesTable: with many peers and a few changes,
// UpdatePeers patches the address table instead of rebuilding it; the
// result says what a rebuild would, addresses resolve to their new owners,
// and a removed peer's address to none.
func TestUpdatePeersPatchesTable(t *testing.T) {
	peers := make([]Peer, 40)
	for i := range peers {
		peers[i] = Peer{PublicKey: mustKey(t).Public(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 1, byte(i)}), 32)}}
	}
	n, err := newNode(Config{PrivateKey: mustKey(t), BindAddress: netip.MustParseAddr("127.0.0.1"),
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}, Peers: peers}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	next := slices.Clone(peers)
	// Peer 1's address moves to peer 0, peer 2 leaves, a new peer comes.
	next[0].AllowedIPs = append(slices.Clone(next[0].AllowedIPs), next[1].AllowedIPs[0])
	next[1].AllowedIPs = []netip.Prefix{netip.MustParsePrefix("100.64.2.1/32")}
	newcomer := Peer{PublicKey: mustKey(t).Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.2.2/32")}}
	next = append(slices.Delete(next, 2, 3), newcomer)
	if _, err := n.UpdatePeers(next); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	got, want, settled := contents(n.table.Load()), contents(newTable(n.peers, n.stateAt)), n.settled == n.table.Load()
	n.mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("table after UpdatePeers (-rebuilt +patched):\n%s", diff)
	}
	if !settled {
		t.Error("the table in force is not the settled one after a successful UpdatePeers")
	}
	for addr, want := range map[string]meshkey.Public{"100.64.1.1": peers[0].PublicKey, "100.64.2.1": peers[1].PublicKey, "100.64.2.2": newcomer.PublicKey, "100.64.1.3": peers[3].PublicKey} {
		if k, ok := n.PeerForAddr(netip.MustParseAddr(addr)); !ok || k != want {
			t.Errorf("%s resolves to %v (%v), want %v", addr, k.Short(), ok, want.Short())
		}
	}
	if _, ok := n.PeerForAddr(netip.MustParseAddr("100.64.1.2")); ok {
		t.Error("the removed peer's address still resolves")
	}
}
