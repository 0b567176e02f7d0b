package netstack

import (
	"net/netip"

	"github.com/sshmesh/sshmesh/meshkey"
)

// table maps allowed-IP prefixes to peers with WireGuard's meaning: the
// longest prefix that contains an address names its peer. Prefixes are
// stored masked, as the device stores them. A table is never changed after
// it is built; Node swaps whole tables.
type table struct {
	// entries holds one map per prefix length, keyed by the masked prefix.
	// A zero key is a tombstone: the prefix matches, but names no peer.
	v4 [33]map[netip.Prefix]meshkey.Public
	v6 [129]map[netip.Prefix]meshkey.Public
}

// set gives p to key, replacing any earlier owner of the same prefix.
func (t *table) set(p netip.Prefix, key meshkey.Public) {
	p = p.Masked()
	m := &t.v6[p.Bits()]
	if p.Addr().Is4() {
		m = &t.v4[p.Bits()]
	}
	if *m == nil {
		*m = make(map[netip.Prefix]meshkey.Public)
	}
	(*m)[p] = key
}

// lookup returns the peer owning the longest prefix that contains a.
// IPv4-mapped IPv6 addresses are looked up as IPv4, since that is the
// address the packet carried.
func (t *table) lookup(a netip.Addr) (meshkey.Public, bool) {
	if t == nil || !a.IsValid() {
		return meshkey.Public{}, false
	}
	a = a.Unmap().WithZone("")
	maps := t.v6[:]
	if a.Is4() {
		maps = t.v4[:]
	}
	for bits := len(maps) - 1; bits >= 0; bits-- {
		m := maps[bits]
		if m == nil {
			continue
		}
		p, err := a.Prefix(bits)
		if err != nil {
			continue
		}
		if key, ok := m[p]; ok {
			return key, !key.IsZero()
		}
	}
	return meshkey.Public{}, false
}

// each calls f for every prefix in t with its owner (zero for a
// tombstone).
func (t *table) each(f func(netip.Prefix, meshkey.Public)) {
	for _, m := range t.v4 {
		for p, k := range m {
			f(p, k)
		}
	}
	for _, m := range t.v6 {
		for p, k := range m {
			f(p, k)
		}
	}
}

// owner returns the exact owner of the masked prefix p, if any.
func (t *table) owner(p netip.Prefix) (meshkey.Public, bool) {
	p = p.Masked()
	m := t.v6[p.Bits()]
	if p.Addr().Is4() {
		m = t.v4[p.Bits()]
	}
	k, ok := m[p]
	return k, ok
}

// newTable builds the table of a validated peer list.
func newTable(peers []Peer) *table {
	t := new(table)
	for _, p := range peers {
		for _, pfx := range p.AllowedIPs {
			t.set(pfx, p.PublicKey)
		}
	}
	return t
}

// transition returns the table to use while the device moves from old to
// next: every prefix whose owner differs between the two is a tombstone, so
// an address in flux resolves to no peer (fail closed) instead of to the
// wrong one.
func transition(old, next *table) *table {
	t := new(table)
	old.each(func(p netip.Prefix, k meshkey.Public) {
		if k2, ok := next.owner(p); ok && k2 == k {
			t.set(p, k)
		} else {
			t.set(p, meshkey.Public{})
		}
	})
	next.each(func(p netip.Prefix, k meshkey.Public) {
		if _, ok := old.owner(p); !ok {
			t.set(p, meshkey.Public{})
		}
	})
	return t
}
