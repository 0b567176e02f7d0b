package netstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/sshmesh/sshmesh/meshkey"
)

// filePeer is a [Peer] section of a test wg-quick file.
type filePeer struct {
	key     meshkey.Public
	ips     []string
	ep      string // "" for none
	comment string // a comment line in the section, "" for none
	raw     string // extra lines, as written
}

// wgFile is a test wg-quick file: a node's [Interface] and its peers.
type wgFile struct {
	priv  meshkey.Private
	peers []filePeer
}

func (f wgFile) bytes() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "[Interface]\nPrivateKey = %s\nAddress = 10.99.0.1/32\n", f.priv.Base64())
	for _, p := range f.peers {
		fmt.Fprintf(&b, "\n[Peer]\nPublicKey = %s\n", p.key.String())
		if p.comment != "" {
			fmt.Fprintf(&b, "# %s\n", p.comment)
		}
		if len(p.ips) > 0 {
			fmt.Fprintf(&b, "AllowedIPs = %s\n", strings.Join(p.ips, ", "))
		}
		if p.ep != "" {
			fmt.Fprintf(&b, "Endpoint = %s\n", p.ep)
		}
		b.WriteString(p.raw)
	}
	return []byte(b.String())
}

func (f wgFile) clone() wgFile {
	f.peers = slices.Clone(f.peers)
	return f
}

// startFromFile brings a node up from f as sshmesh serve does (ParseConfig,
// then New); wrap, when not nil, wraps its bind.
func startFromFile(t *testing.T, f wgFile, wrap func(conn.Bind) conn.Bind) *Node {
	t.Helper()
	cfg, _, err := ParseConfig(bytes.NewReader(f.bytes()), "wg0.conf")
	if err != nil {
		t.Fatal(err)
	}
	cfg.BindAddress = netip.MustParseAddr("127.0.0.1")
	n, err := newNode(cfg, wrap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// wantPeers is what a node holds for a file's peers: ParseConfig's, with
// masked prefixes (each once) and unmapped endpoints.
func wantPeers(peers []Peer) []Peer {
	out := make([]Peer, len(peers))
	for i, p := range peers {
		p.Endpoint = netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port())
		var ips []netip.Prefix
		for _, a := range p.AllowedIPs {
			if !slices.Contains(ips, a.Masked()) {
				ips = append(ips, a.Masked())
			}
		}
		p.AllowedIPs = ips
		out[i] = p
	}
	return out
}

var cmpPeers = cmp.Options{cmpopts.EquateComparable(netip.Prefix{}, netip.AddrPort{}), cmpopts.EquateEmpty()}

// reloadFile parses data as an update of n and as a whole file, requires
// the same outcome (the same error, or the same peers), and applies the
// update. It returns the update, nil after an error.
func reloadFile(t *testing.T, n *Node, data []byte) *ConfigUpdate {
	t.Helper()
	u, err := n.ParseUpdate(data, "wg0.conf")
	cfg, _, ferr := ParseConfig(bytes.NewReader(data), "wg0.conf")
	if fmt.Sprint(err) != fmt.Sprint(ferr) {
		t.Fatalf("ParseUpdate: %v\nParseConfig: %v\nfile:\n%s", err, ferr, data)
	}
	if err != nil {
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Fatalf("ParseUpdate's error %v is no *ConfigError", err)
		}
		return nil
	}
	if _, err := n.ApplyUpdate(u); err != nil {
		t.Fatalf("ApplyUpdate: %v", err)
	}
	if diff := cmp.Diff(wantPeers(cfg.Peers), n.Peers(), cmpPeers); diff != "" {
		t.Fatalf("peers after the update (-file +node):\n%s", diff)
	}
	checkIndex(t, n)
	return u
}

// checkIndex checks the node's peer index: the states by key and by
// index, the section digests, and the table, which must be the one a
// rebuild makes.
func checkIndex(t *testing.T, n *Node) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.byKey.states) != len(n.peers) || len(n.stateAt) != len(n.peers) {
		t.Fatalf("%d peers, %d states by key, %d by index", len(n.peers), len(n.byKey.states), len(n.stateAt))
	}
	if n.sections != nil && len(n.sections) != len(n.peers) {
		t.Fatalf("%d peers, %d section digests", len(n.peers), len(n.sections))
	}
	for i, st := range n.stateAt {
		ps := n.byKey.get(st.key)
		if ps == nil || ps != st || int(ps.idx) != i {
			t.Fatalf("peer %d (%s): its state is not indexed right", i, st.key.Short())
		}
	}
	if n.table.Load() != n.settled {
		t.Fatal("the table in force is not the settled one")
	}
	if diff := cmp.Diff(contents(newTable(n.peers, n.stateAt)), contents(n.settled)); diff != "" {
		t.Fatalf("table (-rebuilt +node's):\n%s", diff)
	}
}

func testFile(t *testing.T, nPeers int) (wgFile, []meshkey.Public) {
	keys := make([]meshkey.Public, nPeers+20)
	for i := range keys {
		keys[i] = mustKey(t).Public()
	}
	f := wgFile{priv: mustKey(t)}
	for i := range nPeers {
		p := filePeer{key: keys[i], ips: []string{fmt.Sprintf("10.0.0.%d/32", i+1)}}
		if i%3 == 0 {
			p.ep = fmt.Sprintf("127.0.0.1:%d", 40000+i)
		}
		f.peers = append(f.peers, p)
	}
	return f, keys
}

// TestParseUpdateParsesOnlyChanged: a reload parses the [Peer] sections
// whose bytes changed, and only those; the peers of a file whose sections
// the node cannot vouch for are all parsed.
func TestParseUpdateParsesOnlyChanged(t *testing.T) {
	f, keys := testFile(t, 20)
	n := startFromFile(t, f, nil)
	parsed := func(data []byte, want int) {
		t.Helper()
		if u := reloadFile(t, n, data); u == nil || u.Parsed != want {
			t.Fatalf("parsed %v sections, want %d", u, want)
		}
	}
	parsed(f.bytes(), 0)
	f.peers[7].comment = "moved desks"
	parsed(f.bytes(), 1)
	f.peers = slices.Insert(f.peers, 3, filePeer{key: keys[30], ips: []string{"10.0.1.1"}})
	parsed(f.bytes(), 1)
	f.peers = slices.Delete(f.peers, 10, 11)
	parsed(f.bytes(), 0)
	f.peers[0].ips = []string{"10.0.2.0/24"}
	f.peers[19].ips = nil
	parsed(f.bytes(), 20) // the first and the last: the whole run between them
	// After a SetPeers the node's peers are not a file's: all are parsed.
	if err := n.SetPeers(n.Peers()); err != nil {
		t.Fatal(err)
	}
	parsed(f.bytes(), len(f.peers))
	parsed(f.bytes(), 0)
}

// TestParseUpdateKeyChange: a section whose key changes is a peer removed
// and another added: the address is the new key's, the old key no peer.
func TestParseUpdateKeyChange(t *testing.T) {
	f, keys := testFile(t, 12)
	n := startFromFile(t, f, nil)
	old := f.peers[4].key
	f.peers[4].key = keys[25]
	u := reloadFile(t, n, f.bytes())
	if u.Parsed != 1 {
		t.Errorf("parsed %d sections, want 1", u.Parsed)
	}
	if k, ok := n.PeerForAddr(netip.MustParseAddr("10.0.0.5")); !ok || k != keys[25] {
		t.Errorf("10.0.0.5 is %s (%v), want the new key %s", k.Short(), ok, keys[25].Short())
	}
	if n.isPeer(old) {
		t.Error("the replaced key is still a peer")
	}
}

// TestParseUpdateAddressMoves: an address moved from one peer to another
// (both sections changed) moves its identity; one changed section that
// takes an address an unchanged peer keeps is refused, before or after
// that peer in the file, at the line ParseConfig names, and changes
// nothing.
func TestParseUpdateAddressMoves(t *testing.T) {
	f, _ := testFile(t, 12)
	n := startFromFile(t, f, nil)
	f.peers[2].ips, f.peers[9].ips = nil, []string{"10.0.0.10/32", "10.0.0.3/32"}
	reloadFile(t, n, f.bytes())
	if k, ok := n.PeerForAddr(netip.MustParseAddr("10.0.0.3")); !ok || k != f.peers[9].key {
		t.Errorf("10.0.0.3 is %s (%v), want peer 9's", k.Short(), ok)
	}
	before := n.Peers()
	for _, c := range []struct {
		taker int
		ip    string
		line  int
	}{
		{taker: 9, ip: "10.0.0.5/24", line: 48}, // 10.0.0.0/24 is nobody's yet
		{taker: 1, ip: "10.0.0.12", line: 47},   // peer 11's, after peer 1
		{taker: 11, ip: "10.0.0.2", line: 47},   // peer 1's, before peer 11
	} {
		g := f.clone()
		g.peers[c.taker].ips = append(slices.Clone(g.peers[c.taker].ips), c.ip)
		if c.line == 48 {
			g.peers[4].ips = []string{"10.0.0.77/24"} // and 10.0.0.0/24 twice, both sections changed
		}
		if u := reloadFile(t, n, g.bytes()); u != nil {
			t.Fatalf("peer %d taking %s was applied", c.taker, c.ip)
		}
		if diff := cmp.Diff(before, n.Peers(), cmpPeers); diff != "" {
			t.Errorf("a refused file changed the peers:\n%s", diff)
		}
	}
	// The error names the line ParseConfig names (reloadFile compared
	// them); here, once by hand: peer 11 takes peer 1's address.
	g := f.clone()
	g.peers[11].ips = append(slices.Clone(g.peers[11].ips), "10.0.0.2")
	_, err := n.ParseUpdate(g.bytes(), "wg0.conf")
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Line != 54 || ce.Key != "AllowedIPs" || !strings.Contains(err.Error(), "10.0.0.2/32 is also in the [Peer] at line 10") {
		t.Errorf("error %v, want wg0.conf:54: AllowedIPs: 10.0.0.2/32 is also in the [Peer] at line 10", err)
	}
}

// TestParseUpdateDuplicateKey: one changed section that takes the key of
// an unchanged peer, before or after it, is refused as ParseConfig refuses
// it; a key moved between two changed sections is fine.
func TestParseUpdateDuplicateKey(t *testing.T) {
	f, _ := testFile(t, 10)
	n := startFromFile(t, f, nil)
	before := n.Peers()
	for _, c := range [][2]int{{8, 2}, {2, 8}} {
		g := f.clone()
		g.peers[c[0]].key = g.peers[c[1]].key
		if u := reloadFile(t, n, g.bytes()); u != nil {
			t.Fatalf("peer %d taking peer %d's key was applied", c[0], c[1])
		}
		if diff := cmp.Diff(before, n.Peers(), cmpPeers); diff != "" {
			t.Errorf("a refused file changed the peers:\n%s", diff)
		}
	}
	g := f.clone()
	g.peers[3].key, g.peers[6].key = g.peers[6].key, g.peers[3].key
	reloadFile(t, n, g.bytes())
}

// TestParseUpdateRandomEdits: random edits of a file, one after another
// (keys and addresses taken from other peers, sections added, removed,
// swapped, commented and broken), each parsed as an update and as a whole
// file: the same error or the same peers, every time, and an index that
// matches a rebuild.
func TestParseUpdateRandomEdits(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	f, keys := testFile(t, 30)
	n := startFromFile(t, f, nil)
	ip := func() string { return fmt.Sprintf("10.0.0.%d/%d", 1+rnd.IntN(45), []int{32, 32, 32, 30}[rnd.IntN(4)]) }
	applied, refused := 0, 0
	for range 300 {
		g := f.clone()
		for range 1 + rnd.IntN(2) {
			i := rnd.IntN(len(g.peers))
			p := &g.peers[i]
			switch rnd.IntN(8) {
			case 0:
				p.ips = []string{ip()}
				if rnd.IntN(3) == 0 {
					p.ips = append(p.ips, ip())
				}
			case 1:
				p.key = keys[rnd.IntN(len(keys))]
			case 2:
				g.peers = slices.Insert(g.peers, i, filePeer{key: keys[rnd.IntN(len(keys))], ips: []string{ip()}})
			case 3:
				if len(g.peers) > 2 {
					g.peers = slices.Delete(g.peers, i, i+1)
				}
			case 4:
				j := rnd.IntN(len(g.peers))
				g.peers[i], g.peers[j] = g.peers[j], g.peers[i]
			case 5:
				p.comment = fmt.Sprintf("edit %d", rnd.IntN(1000))
			case 6:
				p.raw = []string{"AllowedIPs = nope\n", "Endpoint = 127.0.0.1:0\n", "PersistentKeepalive = 25\n", "publickey = " + keys[rnd.IntN(len(keys))].String() + "\n"}[rnd.IntN(4)]
			case 7:
				p.ep = []string{"", "127.0.0.1:40099", "[::ffff:127.0.0.1]:40098"}[rnd.IntN(3)]
			}
		}
		if reloadFile(t, n, g.bytes()) != nil {
			f = g
			applied++
		} else {
			refused++
		}
	}
	t.Logf("%d edits applied, %d refused", applied, refused)
	if applied < 50 || refused < 50 {
		t.Errorf("%d edits applied, %d refused: the edits test too little of one kind", applied, refused)
	}
}

// TestApplyUpdateFailedDevice: an update the device refuses part-way
// leaves the peers, the device and the table as they were, and the node
// keeps the digests of the file it runs: the file reverted is parsed
// against them (nothing to parse) and applies.
func TestApplyUpdateFailedDevice(t *testing.T) {
	f, keys := testFile(t, 12)
	n := startFromFile(t, f, func(b conn.Bind) conn.Bind { return refusingBind{b} })
	before := n.Peers()
	g := f.clone()
	g.peers[1].ips, g.peers[5].ips = nil, []string{"10.0.0.6/32", "10.0.0.2/32"} // 10.0.0.2 moves from 1 to 5
	g.peers = append(g.peers, filePeer{key: keys[20], ips: []string{"10.0.3.1"}, ep: "127.0.0.1:9"})
	u, err := n.ParseUpdate(g.bytes(), "wg0.conf")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ApplyUpdate(u); err == nil {
		t.Fatal("the update the device refuses did not fail")
	}
	if _, err := n.ApplyUpdate(u); err == nil || !strings.Contains(err.Error(), "applied already") {
		t.Errorf("an update applied a second time: %v, want refused", err)
	}
	if diff := cmp.Diff(before, n.Peers(), cmpPeers); diff != "" {
		t.Errorf("a failed update changed the peers:\n%s", diff)
	}
	checkIndex(t, n)
	for _, c := range []struct {
		addr string
		want meshkey.Public
	}{{"10.0.0.2", f.peers[1].key}, {"10.0.0.4", f.peers[3].key}} {
		a := netip.MustParseAddr(c.addr)
		if k, ok := n.PeerForAddr(a); !ok || k != c.want {
			t.Errorf("%s is %s (%v) after the failure, want %s", c.addr, k.Short(), ok, c.want.Short())
		}
	}
	if got := deviceOwner(n, netip.MustParseAddr("10.0.0.4")); got != f.peers[3].key.Hex() {
		t.Errorf("the device gives 10.0.0.4 to %.8s, want peer 3 %.8s", got, f.peers[3].key.Hex())
	}
	if u := reloadFile(t, n, f.bytes()); u.Parsed != 0 {
		t.Errorf("the file in force, read again after the failure, parsed %d sections, want 0", u.Parsed)
	}
	g.peers[len(g.peers)-1].ep = "127.0.0.1:40100"
	reloadFile(t, n, g.bytes())
	if k, ok := n.PeerForAddr(netip.MustParseAddr("10.0.0.2")); !ok || k != f.peers[5].key {
		t.Errorf("10.0.0.2 is %s (%v) after the good update, want peer 5's", k.Short(), ok)
	}
}

// TestNewTrustsOnlyTheFilesPeers: a Config from ParseConfig whose peers
// were changed before New does not let the node take the file's sections
// for its peers: the next reload parses them all and the node ends up
// with the file's peers.
func TestNewTrustsOnlyTheFilesPeers(t *testing.T) {
	f, keys := testFile(t, 6)
	cfg, _, err := ParseConfig(bytes.NewReader(f.bytes()), "wg0.conf")
	if err != nil {
		t.Fatal(err)
	}
	cfg.BindAddress = netip.MustParseAddr("127.0.0.1")
	cfg.Peers[2].AllowedIPs[0] = netip.MustParsePrefix("10.0.9.9/32") // in place: the same slices
	cfg.Peers[4].PublicKey = keys[15]
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if u := reloadFile(t, n, f.bytes()); u.Parsed != 6 {
		t.Errorf("parsed %d sections, want all 6", u.Parsed)
	}
	// A prefix given to a second peer after ParseConfig checked the file
	// is refused by New all the same.
	cfg, _, err = ParseConfig(bytes.NewReader(f.bytes()), "wg0.conf")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Peers[3].AllowedIPs = append(cfg.Peers[3].AllowedIPs, cfg.Peers[1].AllowedIPs[0])
	if n, err := New(cfg); err == nil {
		n.Close()
		t.Error("New took a prefix given to two peers after ParseConfig")
	}
}

// TestParseUpdateHostEndpoint: a section naming its Endpoint by host name
// is parsed on every reload, so that the name is resolved anew.
func TestParseUpdateHostEndpoint(t *testing.T) {
	addr := netip.MustParseAddr("127.0.0.2")
	old := lookupHost
	lookupHost = func(context.Context, string) ([]netip.Addr, error) { return []netip.Addr{addr}, nil }
	t.Cleanup(func() { lookupHost = old })
	f, _ := testFile(t, 5)
	f.peers[2].ep = "peer2.example:51820"
	n := startFromFile(t, f, nil)
	if u := reloadFile(t, n, f.bytes()); u.Parsed != 1 {
		t.Errorf("parsed %d sections, want the one naming a host", u.Parsed)
	}
	addr = netip.MustParseAddr("127.0.0.3")
	reloadFile(t, n, f.bytes())
	if ep := n.Peers()[2].Endpoint; ep.Addr() != addr {
		t.Errorf("endpoint %v after the name moved to %v", ep, addr)
	}
}

// TestUpdatePeersRandom: random peer lists, one after another (keys and
// prefixes shared between peers, peers reordered, prefixes unmasked),
// given to UpdatePeers, which checks only the new and changed peers: it
// refuses exactly the lists with a key or a prefix twice, and otherwise
// holds the list with the changes reported right and an index that
// matches a rebuild.
func TestUpdatePeersRandom(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	keys := make([]meshkey.Public, 30)
	for i := range keys {
		keys[i] = mustKey(t).Public()
	}
	pfxs := []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "fd00::/64", "10.1.2.3/24"}
	for i := range 30 {
		pfxs = append(pfxs, fmt.Sprintf("10.1.2.%d/32", i), fmt.Sprintf("fd00::%x/128", i))
	}
	n, err := newNode(Config{PrivateKey: mustKey(t), BindAddress: netip.MustParseAddr("127.0.0.1"), Addresses: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/32")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	randomPeer := func(k meshkey.Public) Peer {
		p := Peer{PublicKey: k}
		for range rnd.IntN(3) {
			p.AllowedIPs = append(p.AllowedIPs, netip.MustParsePrefix(pfxs[rnd.IntN(len(pfxs))]))
		}
		if rnd.IntN(3) == 0 {
			p.Endpoint = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(40000+rnd.IntN(3)))
		}
		return p
	}
	cur := []Peer{}
	refused := 0
	for round := range 200 {
		next := slices.Clone(cur)
		for range 1 + rnd.IntN(3) {
			i := rnd.IntN(len(next) + 1)
			switch op := rnd.IntN(5); {
			case op == 0 || i == len(next):
				next = slices.Insert(next, i, randomPeer(keys[rnd.IntN(len(keys))]))
			case op == 1:
				next = slices.Delete(next, i, i+1)
			case op == 2:
				next[i] = randomPeer(next[i].PublicKey)
			case op == 3:
				j := rnd.IntN(len(next))
				next[i], next[j] = next[j], next[i]
			case op == 4:
				next[i].PersistentKeepalive = time.Duration(rnd.IntN(2)) * 25 * time.Second
			}
		}
		// The reference: every key once, every masked prefix in one peer.
		ok := true
		keyAt, owner := map[meshkey.Public]bool{}, map[netip.Prefix]meshkey.Public{}
		for _, p := range next {
			ok = ok && !keyAt[p.PublicKey]
			keyAt[p.PublicKey] = true
			for _, a := range p.AllowedIPs {
				if k, dup := owner[a.Masked()]; dup && k != p.PublicKey {
					ok = false
				}
				owner[a.Masked()] = p.PublicKey
			}
		}
		ch, err := n.UpdatePeers(next)
		if (err == nil) != ok {
			t.Fatalf("round %d: UpdatePeers: %v, want refused %v", round, err, !ok)
		}
		checkIndex(t, n)
		if err != nil {
			refused++
			if diff := cmp.Diff(wantPeers(cur), n.Peers(), cmpPeers); diff != "" {
				t.Fatalf("round %d: a refused list changed the peers:\n%s", round, diff)
			}
			continue
		}
		if diff := cmp.Diff(wantPeers(next), n.Peers(), cmpPeers); diff != "" {
			t.Fatalf("round %d: peers (-given +held):\n%s", round, diff)
		}
		var want PeerChanges
		was := map[meshkey.Public]Peer{}
		for _, p := range wantPeers(cur) {
			was[p.PublicKey] = p
		}
		for _, p := range wantPeers(next) {
			if q, ok := was[p.PublicKey]; !ok {
				want.Added = append(want.Added, p.PublicKey)
			} else if !samePeer(p, q) {
				want.Changed = append(want.Changed, p.PublicKey)
			}
		}
		for _, p := range cur {
			if !keyAt[p.PublicKey] {
				want.Removed = append(want.Removed, p.PublicKey)
			}
		}
		if diff := cmp.Diff(want, ch, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round %d: changes (-want +got):\n%s", round, diff)
		}
		cur = next
	}
	if refused < 20 || refused > 180 {
		t.Errorf("%d of 200 lists refused: the lists test too little of one kind", refused)
	}
}
