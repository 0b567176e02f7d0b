package netstack

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

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
	return newTable(peers, states)
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
	tb := newTable(peers, states)
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
		old := newTable(oldPeers, states)
		if round%3 == 1 && last != nil {
			old = last
		}
		byKey := map[meshkey.Public]Peer{}
		for _, p := range oldPeers {
			byKey[p.PublicKey] = p
		}
		var gone, came []Peer
		inNext := map[meshkey.Public]bool{}
		for _, p := range nextPeers {
			inNext[p.PublicKey] = true
			prev, ok := byKey[p.PublicKey]
			switch {
			case !ok:
				came = append(came, p)
			case !samePeer(prev, p):
				gone, came = append(gone, prev), append(came, p)
			}
		}
		for _, p := range oldPeers {
			if !inNext[p.PublicKey] {
				gone = append(gone, p)
			}
		}
		next, trans := patchTables(old, gone, came, states)
		wantNext := newTable(nextPeers, states)
		if diff := cmp.Diff(contents(wantNext), contents(next)); diff != "" {
			t.Fatalf("round %d: patched next table (-rebuilt +patched):\n%s", round, diff)
		}
		if diff := cmp.Diff(contents(transition(old, wantNext)), contents(trans)); diff != "" {
			t.Fatalf("round %d: patched transition table (-rebuilt +patched):\n%s", round, diff)
		}
		if diff := cmp.Diff(contents(newTable(oldPeers, states)), contents(old)); diff != "" {
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
