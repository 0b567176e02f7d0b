package netstack

import (
	"hash/maphash"

	"github.com/sshmesh/sshmesh/meshkey"
)

// keyIndex finds a peer of the node's peer set by its key. It is an
// open-addressing hash table of indexes into the peers' states (by index
// in Node.peers), at most half full: 4 bytes a slot, about 10 a peer,
// where a Go map from key to state took about 55 (its 40-byte slots) with
// 100,000 peers. A keyIndex is never changed after it is built; the node
// builds a new one with every change of its peer set.
type keyIndex struct {
	// slots holds 1 + the index in states of the peer whose key hashes
	// there (or, after a collision, to a slot before it), 0 for none;
	// its length is a power of two.
	slots  []int32
	states []*peerState
}

// keySeed seeds the index's hash: the keys a look-up is given may come
// from strangers (handshake initiations name any key), and an unknown
// seed keeps them from aiming at long runs of slots.
var keySeed = maphash.MakeSeed()

// hashKey hashes a key with keySeed.
func hashKey(k meshkey.Public) uint64 { return maphash.Bytes(keySeed, k[:]) }

// newKeyIndex indexes states, whose keys are distinct.
func newKeyIndex(states []*peerState) keyIndex {
	n := 1
	for n < 2*len(states) {
		n <<= 1
	}
	x := keyIndex{slots: make([]int32, n), states: states}
	mask := uint64(n - 1)
	for i, ps := range states {
		h := hashKey(ps.key) & mask
		for x.slots[h] != 0 {
			h = (h + 1) & mask
		}
		x.slots[h] = int32(i + 1)
	}
	return x
}

// get returns the state of the peer with key k, or nil.
func (x keyIndex) get(k meshkey.Public) *peerState {
	if len(x.slots) == 0 {
		return nil
	}
	mask := uint64(len(x.slots) - 1)
	for h := hashKey(k) & mask; ; h = (h + 1) & mask {
		i := x.slots[h]
		if i == 0 {
			return nil
		}
		if ps := x.states[i-1]; ps.key == k {
			return ps
		}
	}
}
