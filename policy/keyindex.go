package policy

import (
	"encoding/binary"

	"github.com/sshmesh/sshmesh/meshkey"
)

// prefixIndex finds a node by its WireGuard key while the nodes are
// compiled (duplicates) and for lookups outside Evaluate (which uses
// keyIndex, index.go): by the key's first 8 bytes,
// which tell 100,000 random keys apart, then the whole key in the node;
// a key whose first 8 bytes another node's key has too is in a map of
// its own. It takes about half the memory of a map keyed by the whole
// key, and a lookup hashes 8 bytes, not 32. The zero prefixIndex is empty.
type prefixIndex struct {
	byPrefix map[uint64]int32
	others   map[meshkey.Public]int32 // nil until two keys share a prefix
}

func newPrefixIndex(size int) prefixIndex {
	return prefixIndex{byPrefix: make(map[uint64]int32, size)}
}

func keyPrefix(k *meshkey.Public) uint64 { return binary.LittleEndian.Uint64(k[:8]) }

// add indexes nodes[i] by its key, which no node indexed before has.
func (x *prefixIndex) add(nodes []node, i int32) {
	k := &nodes[i].id.Key
	p := keyPrefix(k)
	if _, taken := x.byPrefix[p]; !taken {
		x.byPrefix[p] = i
		return
	}
	if x.others == nil {
		x.others = map[meshkey.Public]int32{}
	}
	x.others[*k] = i
}

// find returns the index in nodes of the node with key k.
func (x *prefixIndex) find(nodes []node, k meshkey.Public) (int32, bool) {
	if i, ok := x.byPrefix[keyPrefix(&k)]; ok && nodes[i].id.Key == k {
		return i, true
	}
	i, ok := x.others[k]
	return i, ok
}

// nodeByKey returns the index in doc.nodes of the node with key k.
func (doc *Document) nodeByKey(k meshkey.Public) (int32, bool) {
	return doc.byKey.find(doc.nodes, k)
}
