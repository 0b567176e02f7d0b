package policy

import (
	"hash/maphash"

	"github.com/sshmesh/sshmesh/meshkey"
)

// keyIndex finds a node by its WireGuard key, for Evaluate and for every
// other lookup (and, while the nodes are compiled, for duplicates): open
// addressing with linear probing over a table at most four fifths full,
// each slot holding the high bits of the key's hash and the node's index
// plus one (0: empty). One load from a flat table finds most keys (a Go
// map of 100,000 32-byte keys costs three or four; a probe past the first
// slot is mostly in the same line of the cache, and the hash bits spare
// reading the keys of other nodes), in 8 bytes a slot at 1.3 slots a node
// (at 100,000). The hash is seeded when the nodes are compiled (a
// Reparse that reuses them keeps the seed), so keys chosen to collide (a
// node's key is whatever its owner made) cannot be chosen in advance; a
// found slot is confirmed against the node's whole key.
type keyIndex struct {
	seed  maphash.Seed
	slots []uint64
	n     int // keys held
}

// newKeyIndex returns an empty index with room for about size keys (it
// grows past them).
func newKeyIndex(size int) keyIndex {
	x := keyIndex{seed: maphash.MakeSeed()}
	if size > 0 {
		x.slots = make([]uint64, tableSize(size))
	}
	return x
}

// tableSize is the smallest power of two that n entries fill to at most
// four fifths (and at least 2).
func tableSize(n int) int {
	size := 2
	for size*4 < n*5 {
		size <<= 1
	}
	return size
}

// add indexes recs[i].key, which no key indexed before equals.
func (x *keyIndex) add(recs []nodeRec, i int32) {
	if (x.n+1)*5 > len(x.slots)*4 {
		x.grow(recs)
	}
	x.put(maphash.Comparable(x.seed, recs[i].key), i)
	x.n++
}

// put stores node i, whose key hashes to h, in the first empty slot.
func (x *keyIndex) put(h uint64, i int32) {
	mask := uint64(len(x.slots) - 1)
	j := h & mask
	for x.slots[j] != 0 {
		j = (j + 1) & mask
	}
	x.slots[j] = h&^0xffffffff | uint64(i+1)
}

// grow doubles the table (the keys' hashes are computed again).
func (x *keyIndex) grow(recs []nodeRec) {
	old := x.slots
	x.slots = make([]uint64, tableSize(max(2*x.n, 1))) // twice as many
	for _, e := range old {
		if e != 0 {
			i := int32(uint32(e)) - 1
			x.put(maphash.Comparable(x.seed, recs[i].key), i)
		}
	}
}

// find returns the index in recs of the node with key k.
func (x *keyIndex) find(recs []nodeRec, k meshkey.Public) (int32, bool) {
	if x.n == 0 {
		return -1, false
	}
	h := maphash.Comparable(x.seed, k)
	return x.probe(recs, k, h, x.slots[h&uint64(len(x.slots)-1)])
}

// find2 is find for two keys, a and b, with the first loads from the
// table side by side: at 100,000 nodes each is a miss in the cache.
func (x *keyIndex) find2(recs []nodeRec, a, b meshkey.Public) (ia int32, okA bool, ib int32, okB bool) {
	if x.n == 0 {
		return -1, false, -1, false
	}
	ha, hb := maphash.Comparable(x.seed, a), maphash.Comparable(x.seed, b)
	mask := uint64(len(x.slots) - 1)
	ea, eb := x.slots[ha&mask], x.slots[hb&mask]
	ia, okA = x.probe(recs, a, ha, ea)
	ib, okB = x.probe(recs, b, hb, eb)
	return ia, okA, ib, okB
}

// probe looks for key k of hash h from its first slot, whose entry is e.
func (x *keyIndex) probe(recs []nodeRec, k meshkey.Public, h, e uint64) (int32, bool) {
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		if i != h&mask {
			e = x.slots[i]
		}
		if e == 0 {
			return -1, false
		}
		if e>>32 == h>>32 {
			if n := int32(uint32(e)) - 1; recs[n].key == k {
				return n, true
			}
		}
	}
}

// nameIndex finds a node by its name: open addressing with linear probing
// over a table at most four fifths full of node indexes plus one (0:
// empty), each found slot confirmed against the name itself. At 4 bytes a
// slot it takes a sixth of what a map from 100,000 names to their ids
// did; a lookup (rules and tests naming nodes, Explain, NodeByName) reads
// a name per probe, which Evaluate never needs.
type nameIndex struct {
	seed  maphash.Seed
	slots []uint32
}

// newNameIndex indexes the names of ns's nodes. It returns false if two
// nodes have one name.
func newNameIndex(ns *nodeSet) (nameIndex, bool) {
	n := ns.len()
	x := nameIndex{seed: maphash.MakeSeed()}
	if n == 0 {
		return x, true
	}
	x.slots = make([]uint32, tableSize(n))
	mask := uint64(len(x.slots) - 1)
	for i := range n {
		name := ns.name(int32(i))
		j := maphash.String(x.seed, name) & mask
		for ; x.slots[j] != 0; j = (j + 1) & mask {
			if ns.name(int32(x.slots[j]-1)) == name {
				return x, false
			}
		}
		x.slots[j] = uint32(i + 1)
	}
	return x, true
}

// find returns the index of the node of ns called name.
func (x *nameIndex) find(ns *nodeSet, name string) (int32, bool) {
	if len(x.slots) == 0 {
		return -1, false
	}
	mask := uint64(len(x.slots) - 1)
	for j := maphash.String(x.seed, name) & mask; x.slots[j] != 0; j = (j + 1) & mask {
		if i := int32(x.slots[j] - 1); ns.name(i) == name {
			return i, true
		}
	}
	return -1, false
}
