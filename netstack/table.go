package netstack

import (
	"maps"
	"net/netip"
	"sync/atomic"

	"github.com/sshmesh/sshmesh/meshkey"
)

// peerState is one peer of the current peer set as the data path sees it.
// A table entry points at it; the node keeps one per peer key for as long
// as the peer stays in the set, so every table version shares it.
type peerState struct {
	key meshkey.Public
	// dormant is set while the peer is off the WireGuard device (see
	// dormant.go). Its prefixes are then missing from the device's own
	// allowed-IPs table, so a packet with a source in them was accepted
	// under a wider prefix of another peer and is not this peer's.
	dormant atomic.Bool
	// idx is the peer's index in Node.peers; read and written under
	// Node.mu only.
	idx int32
}

// table maps allowed-IP prefixes to peers with WireGuard's meaning: the
// longest prefix that contains an address names its peer. Prefixes are
// stored masked, as the device stores them. A table is never changed after
// it is built; Node swaps whole tables.
type table struct {
	// entries holds one map per prefix length, keyed by the masked prefix.
	// A nil entry is a tombstone: the prefix matches, but names no peer.
	v4 [33]map[netip.Prefix]*peerState
	v6 [129]map[netip.Prefix]*peerState
	// A patched table (see patchTables) shares v4 and v6 with the table
	// it was patched from, never changing them; over4 and over6, by
	// prefix length too, shadow them: an entry there replaces theirs, and
	// goneState takes theirs away. nOver counts those entries, size the
	// entries of v4 and v6.
	over4       [33]map[netip.Prefix]*peerState
	over6       [129]map[netip.Prefix]*peerState
	nOver, size int
}

// goneState marks a prefix taken away in a patched table's over maps.
var goneState = new(peerState)

// set gives p to ps (nil for a tombstone), replacing any earlier owner of
// the same prefix.
func (t *table) set(p netip.Prefix, ps *peerState) {
	p = p.Masked()
	m := &t.v6[p.Bits()]
	if p.Addr().Is4() {
		m = &t.v4[p.Bits()]
	}
	if *m == nil {
		*m = make(map[netip.Prefix]*peerState)
	}
	(*m)[p] = ps
}

// lookup returns the peer owning the longest prefix that contains a, or
// nil. IPv4-mapped IPv6 addresses are looked up as IPv4, since that is the
// address the packet carried.
func (t *table) lookup(a netip.Addr) *peerState {
	if t == nil || !a.IsValid() {
		return nil
	}
	a = a.Unmap().WithZone("")
	maps, over := t.v6[:], t.over6[:]
	if a.Is4() {
		maps, over = t.v4[:], t.over4[:]
	}
	for bits := len(maps) - 1; bits >= 0; bits-- {
		m, o := maps[bits], over[bits]
		if m == nil && o == nil {
			continue
		}
		p, err := a.Prefix(bits)
		if err != nil {
			continue
		}
		if ps, ok := o[p]; ok {
			if ps == goneState {
				continue
			}
			return ps
		}
		if ps, ok := m[p]; ok {
			return ps
		}
	}
	return nil
}

// peer returns the configured owner of a: the peer of its longest prefix.
func (t *table) peer(a netip.Addr) (meshkey.Public, bool) {
	if ps := t.lookup(a); ps != nil {
		return ps.key, true
	}
	return meshkey.Public{}, false
}

// sender returns the peer whose key decrypted a packet from source a, as
// the device delivered it: the owner of a's longest prefix, unless that
// owner is dormant (then the device took the packet under another peer's
// wider prefix) or the prefix is in flux (a tombstone).
func (t *table) sender(a netip.Addr) (meshkey.Public, bool) {
	ps := t.lookup(a)
	if ps == nil || ps.dormant.Load() {
		return meshkey.Public{}, false
	}
	return ps.key, true
}

// each calls f for every prefix in t with its owner (nil for a tombstone).
func (t *table) each(f func(netip.Prefix, *peerState)) {
	for bits, m := range t.v4 {
		eachOf(m, t.over4[bits], f)
	}
	for bits, m := range t.v6 {
		eachOf(m, t.over6[bits], f)
	}
}

// eachOf calls f for every prefix of the map m as the map over shadows it.
func eachOf(m, over map[netip.Prefix]*peerState, f func(netip.Prefix, *peerState)) {
	for p, ps := range over {
		if ps != goneState {
			f(p, ps)
		}
	}
	for p, ps := range m {
		if _, shadowed := over[p]; !shadowed {
			f(p, ps)
		}
	}
}

// owner returns the exact owner of the masked prefix p, if any (nil for a
// tombstone).
func (t *table) owner(p netip.Prefix) (*peerState, bool) {
	p = p.Masked()
	m, o := t.v6[p.Bits()], t.over6[p.Bits()]
	if p.Addr().Is4() {
		m, o = t.v4[p.Bits()], t.over4[p.Bits()]
	}
	if ps, ok := o[p]; ok {
		return ps, ps != goneState
	}
	ps, ok := m[p]
	return ps, ok
}

// newTable builds the table of a validated peer list; states holds the
// state of every peer in it.
func newTable(peers []Peer, states map[meshkey.Public]*peerState) *table {
	t := new(table)
	var n4 [33]int // prefixes per length: each map is made once, at its size
	for _, p := range peers {
		for _, pfx := range p.AllowedIPs {
			if pfx.Addr().Is4() {
				n4[pfx.Bits()]++
			}
		}
	}
	for bits, n := range n4 {
		if n > 0 {
			t.v4[bits] = make(map[netip.Prefix]*peerState, n)
		}
	}
	for _, p := range peers {
		for _, pfx := range p.AllowedIPs {
			t.set(pfx, states[p.PublicKey])
		}
	}
	t.size = t.count()
	return t
}

// count returns the number of entries of t's own maps.
func (t *table) count() int {
	n := 0
	for _, m := range t.v4 {
		n += len(m)
	}
	for _, m := range t.v6 {
		n += len(m)
	}
	return n
}

// patched returns a table that says what t says, sharing t's own maps
// (never changed) and copying its over maps, for setOver to change.
func (t *table) patched() *table {
	c := &table{v4: t.v4, v6: t.v6, size: t.size, nOver: t.nOver}
	for i, m := range t.over4 {
		if m != nil {
			c.over4[i] = maps.Clone(m)
		}
	}
	for i, m := range t.over6 {
		if m != nil {
			c.over6[i] = maps.Clone(m)
		}
	}
	return c
}

// setOver gives the masked prefix p to ps (nil for a tombstone,
// goneState to take it away) in t's over maps.
func (t *table) setOver(p netip.Prefix, ps *peerState) {
	p = p.Masked()
	m := &t.over6[p.Bits()]
	if p.Addr().Is4() {
		m = &t.over4[p.Bits()]
	}
	if *m == nil {
		*m = make(map[netip.Prefix]*peerState)
	}
	if _, ok := (*m)[p]; !ok {
		t.nOver++
	}
	(*m)[p] = ps
}

// flat returns t as a table of its own maps only.
func (t *table) flat() *table {
	c := new(table)
	t.each(c.set)
	c.size = c.count()
	return c
}

// patchTables returns what newTable and transition would build for a
// change from old, the table of the current peer set, to a set that
// differs from it only in the peers gone (removed or changed, as they
// were) and came (added or changed, as they are now): old patched with
// the changes (see table.over4), not a rebuild or copy of every peer's
// prefixes. A prefix of a peer outside gone and came belongs to that peer
// in both sets (a prefix has one peer), so only the prefixes of gone and
// came can change owner. When the patches grow to a sixteenth of the
// table, next is made flat again.
func patchTables(old *table, gone, came []Peer, states map[meshkey.Public]*peerState) (next, trans *table) {
	next = old.patched()
	for _, p := range gone {
		for _, pfx := range p.AllowedIPs {
			next.setOver(pfx, goneState)
		}
	}
	for _, p := range came {
		for _, pfx := range p.AllowedIPs {
			next.setOver(pfx, states[p.PublicKey])
		}
	}
	trans = old.patched()
	flux := func(pfx netip.Prefix) {
		ps, inOld := old.owner(pfx)
		ps2, inNext := next.owner(pfx)
		if inOld && inNext && ps != nil && ps2 != nil && ps.key == ps2.key {
			return // the same owner before and after
		}
		trans.setOver(pfx, nil)
	}
	for _, p := range gone {
		for _, pfx := range p.AllowedIPs {
			flux(pfx)
		}
	}
	for _, p := range came {
		for _, pfx := range p.AllowedIPs {
			flux(pfx)
		}
	}
	if next.nOver > 64+next.size/16 {
		next = next.flat()
	}
	return next, trans
}

// transition returns the table to use while the device moves from old to
// next: every prefix whose owner differs between the two is a tombstone, so
// an address in flux resolves to no peer (fail closed) instead of to the
// wrong one.
func transition(old, next *table) *table {
	t := new(table)
	old.each(func(p netip.Prefix, ps *peerState) {
		if ps2, ok := next.owner(p); ok && ps2 != nil && ps != nil && ps2.key == ps.key {
			t.set(p, ps)
		} else {
			t.set(p, nil)
		}
	})
	next.each(func(p netip.Prefix, _ *peerState) {
		if _, ok := old.owner(p); !ok {
			t.set(p, nil)
		}
	})
	return t
}
