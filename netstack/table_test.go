package netstack

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sshmesh/sshmesh/meshkey"
)

func key(b byte) meshkey.Public { return meshkey.Public{0: b, 31: 1} }

func TestTableLongestPrefix(t *testing.T) {
	wide, narrow, host, v6, v6host, all := key(1), key(2), key(3), key(4), key(5), key(6)
	tb := tableOf([]Peer{
		{PublicKey: wide, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{PublicKey: narrow, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}},
		{PublicKey: host, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")}},
		{PublicKey: v6, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd7a:1::/32")}},
		{PublicKey: v6host, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd7a:1:2::3/128")}},
		// Host bits are ignored, as the device ignores them.
		{PublicKey: all, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("::1/0")}},
	})
	type result struct {
		Key meshkey.Public
		OK  bool
	}
	for _, tc := range []struct {
		addr string
		want result
	}{
		{"10.200.0.1", result{wide, true}},
		{"10.1.0.1", result{narrow, true}},
		{"10.1.255.255", result{narrow, true}},
		{"10.1.2.3", result{host, true}},
		{"10.1.2.4", result{narrow, true}},
		{"11.0.0.1", result{}},
		{"::ffff:10.1.2.3", result{host, true}}, // IPv4-mapped means the IPv4 address
		{"fd7a:1::9", result{v6, true}},
		{"fd7a:1:2::3", result{v6host, true}},
		{"fd7a:1:2::4", result{v6, true}},
		{"fd7a:2::1", result{all, true}},
		{"2001:db8::1", result{all, true}},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			k, ok := tb.peer(netip.MustParseAddr(tc.addr))
			if diff := cmp.Diff(tc.want, result{k, ok}); diff != "" {
				t.Errorf("lookup (-want +got):\n%s", diff)
			}
		})
	}
	if k, ok := tb.peer(netip.Addr{}); ok {
		t.Errorf("lookup(zero) = %v, true", k)
	}
	var empty *table
	if _, ok := empty.peer(netip.MustParseAddr("10.0.0.1")); ok {
		t.Error("nil table matched")
	}
}

// TestTableTransition: while a change is applied, every prefix whose owner
// changes resolves to no peer, and the rest keep theirs.
func TestTableTransition(t *testing.T) {
	x, y := key(1), key(2)
	p := netip.MustParsePrefix
	old := tableOf([]Peer{
		{PublicKey: x, AllowedIPs: []netip.Prefix{p("10.0.0.0/8"), p("10.9.0.0/16")}},
		{PublicKey: y, AllowedIPs: []netip.Prefix{p("10.1.0.0/16"), p("10.2.0.0/16")}},
	})
	next := tableOf([]Peer{
		{PublicKey: x, AllowedIPs: []netip.Prefix{p("10.0.0.0/8")}},
		{PublicKey: y, AllowedIPs: []netip.Prefix{p("10.2.0.0/16"), p("10.9.0.0/16"), p("10.3.0.0/16")}},
	})
	mid := transition(old, next)
	for _, tc := range []struct {
		addr string
		want meshkey.Public
	}{
		{"10.0.0.1", x},                   // unchanged
		{"10.1.0.1", meshkey.Public{}},    // removed from y: falls to x in next, but in flux
		{"10.2.0.1", y},                   // unchanged
		{"10.9.0.1", meshkey.Public{}},    // moved x → y
		{"10.3.0.1", meshkey.Public{}},    // added to y
		{"192.168.0.1", meshkey.Public{}}, // nobody's, before and after
	} {
		k, _ := mid.peer(netip.MustParseAddr(tc.addr))
		if k != tc.want {
			t.Errorf("transition lookup(%s) = %v, want %v", tc.addr, k, tc.want)
		}
	}
}

// tableOf builds the table of peers, all on the device.
func tableOf(peers []Peer) *table {
	states := make(map[meshkey.Public]*peerState)
	for _, p := range peers {
		states[p.PublicKey] = &peerState{key: p.PublicKey}
	}
	return newTable(recsOf(peers), statesOf(peers, states))
}

// recsOf returns the records of peers, as the node keeps them.
func recsOf(peers []Peer) []peerRec {
	out := make([]peerRec, len(peers))
	for i, p := range peers {
		out[i] = recOf(p)
	}
	return out
}

// statesOf returns the states of peers, by index, from their states by key.
func statesOf(peers []Peer, byKey map[meshkey.Public]*peerState) []*peerState {
	out := make([]*peerState, len(peers))
	for i, p := range peers {
		out[i] = byKey[p.PublicKey]
	}
	return out
}

// TestTableSenderSkipsDormant: an address inside a dormant peer's prefix
// names no sender, even where a wider prefix of a peer on the device
// covers it (the device took such a packet from the wider peer), until the
// dormant peer is on the device itself.
func TestTableSenderSkipsDormant(t *testing.T) {
	hub, host := key(1), key(2)
	peers := []Peer{
		{PublicKey: hub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}},
		{PublicKey: host, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32")}},
	}
	states := map[meshkey.Public]*peerState{hub: {key: hub}, host: {key: host}}
	states[host].dormant.Store(true)
	tb := newTable(recsOf(peers), statesOf(peers, states))
	type result struct {
		Key meshkey.Public
		OK  bool
	}
	sender := func(a string) result {
		k, ok := tb.sender(netip.MustParseAddr(a))
		return result{k, ok}
	}
	if diff := cmp.Diff(result{}, sender("10.0.0.5")); diff != "" {
		t.Errorf("dormant host's address (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(result{hub, true}, sender("10.0.0.6")); diff != "" {
		t.Errorf("hub's own address (-want +got):\n%s", diff)
	}
	if k, ok := tb.peer(netip.MustParseAddr("10.0.0.5")); !ok || k != host {
		t.Errorf("peer(10.0.0.5) = %v, %v; the configured owner is the host", k, ok)
	}
	states[host].dormant.Store(false)
	if diff := cmp.Diff(result{host, true}, sender("10.0.0.5")); diff != "" {
		t.Errorf("woken host's address (-want +got):\n%s", diff)
	}
}

// contents flattens a table to prefix → owner key ("-" for a tombstone),
// for comparing tables by what they say.
func contents(t *table) map[netip.Prefix]string {
	out := map[netip.Prefix]string{}
	t.each(func(p netip.Prefix, ps *peerState) {
		if ps == nil {
			out[p] = "-"
		} else {
			out[p] = ps.key.Short()
		}
	})
	return out
}

// TestPatchTablesMatchesRebuild: on random peer sets and random changes
// to them (peers added, removed, given other prefixes, prefixes moved
// between peers, endpoints changed), the tables patched from the old one
// say exactly what a rebuild says: the next table as newTable, the one in
// force during the change as transition.
func TestPatchTablesMatchesRebuild(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	keys := make([]meshkey.Public, 40)
	for i := range keys {
		keys[i] = meshkey.Public{0: byte(i), 1: 7, 31: 1}
	}
	prefixes := []string{"10.0.0.0/8", "10.1.0.0/16", "fd7a::/16", "0.0.0.0/0"}
	for i := range 60 {
		prefixes = append(prefixes, fmt.Sprintf("10.1.%d.%d/32", i/8, i%8), fmt.Sprintf("fd7a::%x/128", i))
	}
	// randomSet gives a random subset of keys random disjoint prefixes.
	randomSet := func() []Peer {
		var peers []Peer
		used := map[int]bool{}
		for _, k := range keys {
			if rnd.IntN(3) == 0 {
				continue
			}
			p := Peer{PublicKey: k}
			for range rnd.IntN(3) {
				j := rnd.IntN(len(prefixes))
				if !used[j] {
					used[j] = true
					p.AllowedIPs = append(p.AllowedIPs, netip.MustParsePrefix(prefixes[j]).Masked())
				}
			}
			if rnd.IntN(2) == 0 {
				p.Endpoint = netip.MustParseAddrPort("127.0.0.1:9")
			}
			peers = append(peers, p)
		}
		return peers
	}
	states := map[meshkey.Public]*peerState{}
	for _, k := range keys {
		states[k] = &peerState{key: k}
	}
	var lastPeers []Peer
	var last *table // the patched next table of the round before
	for round := range 300 {
		oldPeers, nextPeers := randomSet(), randomSet()
		if round%3 == 1 && last != nil { // patch a patched table
			oldPeers = lastPeers
			nextPeers = slices.Clone(oldPeers)
			if len(nextPeers) > 0 {
				nextPeers = slices.Delete(nextPeers, 0, 1)
			}
		}
		if round%2 == 0 { // a small change: keep most of old
			nextPeers = slices.Clone(oldPeers)
			if len(nextPeers) > 0 {
				i := rnd.IntN(len(nextPeers))
				nextPeers[i].AllowedIPs = nil // its prefixes go, or move below
				if rnd.IntN(2) == 0 {
					nextPeers = slices.Delete(nextPeers, i, i+1)
				}
			}
		}
		old := newTable(recsOf(oldPeers), statesOf(oldPeers, states))
		if round%3 == 1 && last != nil {
			old = last
		}
		gone, came := changedPeers(oldPeers, nextPeers)
		next, trans := patchTables(old, gone, came, statesOf(came, states))
		wantNext := newTable(recsOf(nextPeers), statesOf(nextPeers, states))
		if diff := cmp.Diff(contents(wantNext), contents(next)); diff != "" {
			t.Fatalf("round %d: patched next table (-rebuilt +patched):\n%s", round, diff)
		}
		if diff := cmp.Diff(contents(transition(old, wantNext)), contents(trans)); diff != "" {
			t.Fatalf("round %d: patched transition table (-rebuilt +patched):\n%s", round, diff)
		}
		if diff := cmp.Diff(contents(newTable(recsOf(oldPeers), statesOf(oldPeers, states))), contents(old)); diff != "" {
			t.Fatalf("round %d: patching changed the old table:\n%s", round, diff)
		}
		for _, s := range prefixes { // look-ups agree too
			a := netip.MustParsePrefix(s).Addr()
			if got, want := next.lookup(a), wantNext.lookup(a); got != want {
				t.Fatalf("round %d: %v looks up as %v in the patched table, %v rebuilt", round, a, got, want)
			}
		}
		lastPeers, last = nextPeers, next
	}
}

// refTable is the plain meaning of an address table, for checking table
// against: a list of prefixes and owners, searched whole.
type refTable map[netip.Prefix]*peerState

// lookup returns the owner of the longest prefix of r that contains a.
func (r refTable) lookup(a netip.Addr) *peerState {
	a = a.Unmap()
	best, bestBits := (*peerState)(nil), -1
	for p, ps := range r {
		if p.Contains(a) && p.Bits() > bestBits {
			best, bestBits = ps, p.Bits()
		}
	}
	return best
}

// TestTableMatchesReference: tables built from random peers with random
// prefixes of every length, IPv4 and IPv6, and tables patched from them
// (peers removed, changed, added, one patch upon another), look up every
// address near their prefixes as a plain search for the longest prefix
// does, and list the same prefixes; their transition tables hold a
// tombstone exactly where the owner changes.
func TestTableMatchesReference(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	// Addresses from a small space, so that prefixes nest and collide.
	randAddr := func(v4 bool) netip.Addr {
		if v4 {
			return netip.AddrFrom4([4]byte{10, byte(rnd.IntN(3)), byte(rnd.IntN(4)), byte(rnd.IntN(256))})
		}
		return netip.AddrFrom16([16]byte{0xfd, 0x7a, 15: byte(rnd.IntN(256)), 14: byte(rnd.IntN(3)), 7: byte(rnd.IntN(2))})
	}
	randPrefix := func() netip.Prefix {
		v4 := rnd.IntN(2) == 0
		a := randAddr(v4)
		bits := a.BitLen()
		switch rnd.IntN(4) {
		case 0: // a host
		case 1: // near the host
			bits -= rnd.IntN(9)
		default: // anything
			bits = rnd.IntN(bits + 1)
		}
		return netip.PrefixFrom(a, bits).Masked()
	}
	keys := make([]meshkey.Public, 50)
	states := map[meshkey.Public]*peerState{}
	for i := range keys {
		keys[i] = meshkey.Public{0: byte(i), 1: 9, 31: 1}
		states[keys[i]] = &peerState{key: keys[i]}
	}
	// randomSet gives a random subset of keys random disjoint prefixes.
	randomSet := func() []Peer {
		used := map[netip.Prefix]bool{}
		var peers []Peer
		for _, k := range keys {
			if rnd.IntN(4) == 0 {
				continue
			}
			p := Peer{PublicKey: k}
			for range rnd.IntN(5) {
				if m := randPrefix(); !used[m] {
					used[m] = true
					p.AllowedIPs = append(p.AllowedIPs, m)
				}
			}
			peers = append(peers, p)
		}
		return peers
	}
	refOf := func(peers []Peer) refTable {
		r := refTable{}
		for _, p := range peers {
			for _, m := range p.AllowedIPs {
				r[m] = states[p.PublicKey]
			}
		}
		return r
	}
	check := func(round int, what string, tb *table, r refTable) {
		t.Helper()
		want := map[netip.Prefix]string{}
		for p, ps := range r {
			want[p] = "-"
			if ps != nil {
				want[p] = ps.key.Short()
			}
		}
		if diff := cmp.Diff(want, contents(tb)); diff != "" {
			t.Fatalf("round %d: %s: prefixes (-reference +table):\n%s", round, what, diff)
		}
		probe := func(a netip.Addr) {
			if got, want := tb.lookup(a), r.lookup(a); got != want {
				t.Fatalf("round %d: %s: lookup(%v) = %v, reference %v", round, what, a, got, want)
			}
		}
		for p, ps := range r {
			if got, ok := tb.owner(p); !ok || got != ps {
				t.Fatalf("round %d: %s: owner(%v) = %v, %v; reference %v", round, what, p, got, ok, ps)
			}
		}
		for p := range r {
			a := p.Addr()
			probe(a)
			if a.Is4() {
				probe(netip.AddrFrom16(a.As16())) // IPv4-mapped: the IPv4 address
			}
			probe(p.Masked().Addr().Prev())
			if last := lastAddr(p); last.IsValid() {
				probe(last)
				probe(last.Next())
			}
		}
		for range 50 {
			probe(randAddr(rnd.IntN(2) == 0))
		}
	}
	var cur []Peer
	var curTable *table
	for round := range 150 {
		next := randomSet()
		if round%2 == 1 && len(cur) > 0 { // a small change of the current set
			next = slices.Clone(cur)
			i := rnd.IntN(len(next))
			switch rnd.IntN(3) {
			case 0:
				next = slices.Delete(next, i, i+1)
			case 1:
				next[i].AllowedIPs = nil
			case 2:
				if m := randPrefix(); !slices.ContainsFunc(next, func(p Peer) bool { return slices.Contains(p.AllowedIPs, m) }) {
					next[i].AllowedIPs = append(slices.Clone(next[i].AllowedIPs), m)
				}
			}
		}
		built := newTable(recsOf(next), statesOf(next, states))
		check(round, "built", built, refOf(next))
		if curTable != nil {
			gone, came := changedPeers(cur, next)
			patched, trans := patchTables(curTable, gone, came, statesOf(came, states))
			check(round, "patched", patched, refOf(next))
			// The transition: every prefix of either set, its owner where
			// both sets give it the same one, else a tombstone.
			oldRef, nextRef, transRef := refOf(cur), refOf(next), refTable{}
			for p, ps := range oldRef {
				transRef[p] = nil
				if nextRef[p] == ps {
					transRef[p] = ps
				}
			}
			for p := range nextRef {
				if _, ok := oldRef[p]; !ok {
					transRef[p] = nil
				}
			}
			check(round, "transition", trans, transRef)
			check(round, "rebuilt transition", transition(curTable, built), transRef)
			built = patched // the next round patches the patched table
		}
		cur, curTable = next, built
	}
	v4, v6 := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd7a::1")
	if allocs := testing.AllocsPerRun(100, func() { curTable.lookup(v4); curTable.lookup(v6) }); allocs != 0 {
		t.Errorf("a look-up allocates %v times", allocs)
	}
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// TestKeyIndex: the index finds every key of the states it was built
// from, by index, and no other key; also empty, and with keys that
// collide in their first bytes.
func TestKeyIndex(t *testing.T) {
	if ps := newKeyIndex(nil).get(key(1)); ps != nil {
		t.Errorf("an empty index found %v", ps.key.Short())
	}
	if ps := (keyIndex{}).get(key(1)); ps != nil {
		t.Errorf("the zero index found %v", ps.key.Short())
	}
	rnd := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 2, 3, 7, 8, 100, 1000} {
		states := make([]*peerState, n)
		want := map[meshkey.Public]*peerState{}
		for i := range states {
			var k meshkey.Public
			k[0], k[1] = byte(i), byte(i>>8) // distinct, and mostly zeros
			if i%2 == 1 {
				for j := range k {
					k[j] = byte(rnd.Uint32())
				}
			}
			states[i] = &peerState{key: k, idx: int32(i)}
			want[k] = states[i]
		}
		x := newKeyIndex(states)
		if len(x.slots) < 2*n {
			t.Errorf("%d keys in %d slots: more than half full", n, len(x.slots))
		}
		if allocs := testing.AllocsPerRun(100, func() { x.get(states[0].key) }); allocs != 0 {
			t.Errorf("get allocates %v times", allocs)
		}
		for k, ps := range want {
			if got := x.get(k); got != ps {
				t.Fatalf("%d keys: get(%v) = %p, want %p", n, k.Short(), got, ps)
			}
		}
		for range 1000 {
			var k meshkey.Public
			k[0], k[1], k[31] = byte(rnd.Uint32()), byte(rnd.Uint32()), 1
			if got := x.get(k); got != want[k] {
				t.Fatalf("%d keys: get(%v) = %p, want %p", n, k.Short(), got, want[k])
			}
		}
	}
}

// TestPeerRecord: a record gives back the peer it was made from, with or
// without the settings kept out of line, and keeps nothing out of line for
// a peer without them.
func TestPeerRecord(t *testing.T) {
	psk := meshkey.Private{0: 9}
	for _, p := range []Peer{
		{PublicKey: key(1)},
		{PublicKey: key(2), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}},
		{PublicKey: key(3), PresharedKey: psk},
		{PublicKey: key(4), Endpoint: netip.MustParseAddrPort("192.0.2.1:51820")},
		{PublicKey: key(5), PersistentKeepalive: 25 * time.Second},
		{PublicKey: key(6), PresharedKey: psk, Endpoint: netip.MustParseAddrPort("[2001:db8::1]:9"), PersistentKeepalive: time.Second,
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("10.1.0.0/16")}},
	} {
		r := recOf(p)
		if diff := cmp.Diff(p, r.peer(p.PublicKey), cmpPeers); diff != "" {
			t.Errorf("peer %s (-made from +given back):\n%s", p.PublicKey.Short(), diff)
		}
		plain := p.PresharedKey.IsZero() && !p.Endpoint.IsValid() && p.PersistentKeepalive == 0
		if (r.more == nil) != plain {
			t.Errorf("peer %s: settings out of line: %v, want %v", p.PublicKey.Short(), r.more != nil, !plain)
		}
		if r.psk() != p.PresharedKey {
			t.Errorf("peer %s: psk() is not the preshared key", p.PublicKey.Short())
		}
	}
}

// changedPeers is what a change from old to next takes away (removed
// peers, and changed ones as they were) and brings (new peers, and
// changed ones as they are), as patchTables takes them.
func changedPeers(old, next []Peer) (gone, came []Peer) {
	byKey := map[meshkey.Public]Peer{}
	for _, p := range old {
		byKey[p.PublicKey] = p
	}
	inNext := map[meshkey.Public]bool{}
	for _, p := range next {
		inNext[p.PublicKey] = true
		if prev, ok := byKey[p.PublicKey]; !ok || !samePeer(prev, p) {
			came = append(came, p)
			if ok {
				gone = append(gone, prev)
			}
		}
	}
	for _, p := range old {
		if !inNext[p.PublicKey] {
			gone = append(gone, p)
		}
	}
	return gone, came
}
