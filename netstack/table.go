package netstack

import (
	"encoding/binary"
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
	// v4 and v6 hold one map per prefix length: v4's keyed by the masked
	// IPv4 address as a number (a key of 4 bytes rather than a
	// netip.Prefix's 32: with 100,000 peers of one /32 each, the map is
	// most of the table), v6's by the masked prefix. A nil entry is a
	// tombstone: the prefix matches, but names no peer.
	v4 [33]map[uint32]*peerState
	v6 [129]map[netip.Prefix]*peerState
	// A patched table (see patchTables) shares v4 and v6 with the table
	// it was patched from, never changing them; over4 and over6, by
	// prefix length too, shadow them: an entry there replaces theirs, and
	// goneState takes theirs away. nOver counts those entries, size the
	// entries of v4 and v6.
	over4       [33]map[uint32]*peerState
	over6       [129]map[netip.Prefix]*peerState
	nOver, size int
}

// goneState marks a prefix taken away in a patched table's over maps.
var goneState = new(peerState)

// addr4 returns the IPv4 address a as a number.
func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// mask4 returns the IPv4 address u with all but its first bits cleared.
func mask4(u uint32, bits int) uint32 {
	return uint32(uint64(u) &^ (1<<(32-bits) - 1))
}

// prefix4 is the IPv4 prefix of v4's key u at length bits.
func prefix4(u uint32, bits int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)}), bits)
}

// put sets m[k] = ps, making m first.
func put[K comparable](m *map[K]*peerState, k K, ps *peerState) {
	if *m == nil {
		*m = make(map[K]*peerState)
	}
	(*m)[k] = ps
}

// set gives p to ps (nil for a tombstone), replacing any earlier owner of
// the same prefix.
func (t *table) set(p netip.Prefix, ps *peerState) {
	p = p.Masked()
	if p.Addr().Is4() {
		put(&t.v4[p.Bits()], addr4(p.Addr()), ps)
	} else {
		put(&t.v6[p.Bits()], p, ps)
	}
}

// lookup returns the peer owning the longest prefix that contains a, or
// nil. IPv4-mapped IPv6 addresses are looked up as IPv4, since that is the
// address the packet carried.
func (t *table) lookup(a netip.Addr) *peerState {
	if t == nil || !a.IsValid() {
		return nil
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		u := addr4(a)
		return lookupIn(t.v4[:], t.over4[:], func(bits int) uint32 { return mask4(u, bits) })
	}
	return lookupIn(t.v6[:], t.over6[:], func(bits int) netip.Prefix {
		p, _ := a.Prefix(bits) // bits is within a's length
		return p
	})
}

// lookupIn is lookup in one family's maps, by prefix length from the
// longest; key(bits) is the key of the address's prefix of that length.
func lookupIn[K comparable](maps, over []map[K]*peerState, key func(bits int) K) *peerState {
	for bits := len(maps) - 1; bits >= 0; bits-- {
		m, o := maps[bits], over[bits]
		if m == nil && o == nil {
			continue
		}
		k := key(bits)
		if ps, ok := o[k]; ok {
			if ps == goneState {
				continue
			}
			return ps
		}
		if ps, ok := m[k]; ok {
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
		eachOf(m, t.over4[bits], func(u uint32, ps *peerState) { f(prefix4(u, bits), ps) })
	}
	for bits, m := range t.v6 {
		eachOf(m, t.over6[bits], f)
	}
}

// eachOf calls f for every key of the map m as the map over shadows it.
func eachOf[K comparable](m, over map[K]*peerState, f func(K, *peerState)) {
	for k, ps := range over {
		if ps != goneState {
			f(k, ps)
		}
	}
	for k, ps := range m {
		if _, shadowed := over[k]; !shadowed {
			f(k, ps)
		}
	}
}

// owner returns the exact owner of the masked prefix p, if any (nil for a
// tombstone).
func (t *table) owner(p netip.Prefix) (*peerState, bool) {
	p = p.Masked()
	if p.Addr().Is4() {
		return ownerIn(t.v4[p.Bits()], t.over4[p.Bits()], addr4(p.Addr()))
	}
	return ownerIn(t.v6[p.Bits()], t.over6[p.Bits()], p)
}

// ownerIn is owner in one map m and the map over that shadows it.
func ownerIn[K comparable](m, over map[K]*peerState, k K) (*peerState, bool) {
	if ps, ok := over[k]; ok {
		return ps, ps != goneState
	}
	ps, ok := m[k]
	return ps, ok
}

// newTable builds the table of a validated peer list; states holds the
// state of each peer of it, by index.
func newTable(peers []peerRec, states []*peerState) *table {
	t := new(table)
	var n4 [33]int // prefixes per length: each map is made once, at its size
	for _, p := range peers {
		for _, pfx := range p.ips {
			if pfx.Addr().Is4() {
				n4[pfx.Bits()]++
			}
		}
	}
	for bits, n := range n4 {
		if n > 0 {
			t.v4[bits] = make(map[uint32]*peerState, n)
		}
	}
	for i, p := range peers {
		for _, pfx := range p.ips {
			t.set(pfx, states[i])
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
	isNew := false
	if p.Addr().Is4() {
		isNew = putNew(&t.over4[p.Bits()], addr4(p.Addr()), ps)
	} else {
		isNew = putNew(&t.over6[p.Bits()], p, ps)
	}
	if isNew {
		t.nOver++
	}
}

// putNew is put, and reports whether k was not in m before.
func putNew[K comparable](m *map[K]*peerState, k K, ps *peerState) bool {
	_, had := (*m)[k]
	put(m, k, ps)
	return !had
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
// came can change owner; cameStates holds the state of each peer of came,
// by index. When the patches grow to a sixteenth of the table, next is
// made flat again.
func patchTables(old *table, gone, came []Peer, cameStates []*peerState) (next, trans *table) {
	next = old.patched()
	for _, p := range gone {
		for _, pfx := range p.AllowedIPs {
			next.setOver(pfx, goneState)
		}
	}
	for i, p := range came {
		for _, pfx := range p.AllowedIPs {
			next.setOver(pfx, cameStates[i])
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
