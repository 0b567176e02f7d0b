package netstack

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
)

// writePeer writes one peer's UAPI lines. update says the peer exists on the
// device already: its allowed IPs are replaced, and its other settings set.
func writePeer(w io.Writer, p Peer, update bool) {
	fmt.Fprintf(w, "public_key=%s\n", p.PublicKey.Hex())
	if update {
		io.WriteString(w, "update_only=true\n")
	}
	fmt.Fprintf(w, "preshared_key=%s\n", p.PresharedKey.Hex())
	if p.Endpoint.IsValid() {
		fmt.Fprintf(w, "endpoint=%s\n", p.Endpoint)
	}
	fmt.Fprintf(w, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepalive/time.Second))
	io.WriteString(w, "replace_allowed_ips=true\n")
	for _, a := range p.AllowedIPs {
		fmt.Fprintf(w, "allowed_ip=%s\n", a.Masked())
	}
}

// peerSource is a peer list: given (peerSlice), or a file read again
// (ConfigUpdate). Its peers' allowed IPs are not to be changed.
type peerSource interface {
	len() int
	at(i int) Peer
}

// peerSlice is a peer list given whole by a caller, with its keys copied
// when the call began: the checks and the change read the same keys
// whatever the caller does to its slice meanwhile (the rest of a peer is
// copied when it is checked).
type peerSlice struct {
	peers []Peer
	keys  []meshkey.Public
}

func newPeerSlice(peers []Peer) peerSlice {
	keys := make([]meshkey.Public, len(peers))
	for i := range peers {
		keys[i] = peers[i].PublicKey
	}
	return peerSlice{peers: peers, keys: keys}
}

func (s peerSlice) len() int { return len(s.keys) }

func (s peerSlice) at(i int) Peer {
	p := s.peers[i]
	p.PublicKey = s.keys[i]
	return p
}

// newStates allocates n peer states together (a variable: tests watch
// the blocks' sizes).
var newStates = func(n int) []peerState { return make([]peerState, n) }

// peerDiff is a new peer list checked against the node's current one
// (Node.peers): built by diffPeers, applied by UpdatePeers.
type peerDiff struct {
	// peers is the new list as given, next its private, validated
	// records, by the same index; a peer that did not change keeps its
	// current record.
	peers peerSource
	next  []peerRec
	// from is, by index in next, the peer's index in the current list, or
	// -1 for a new peer; to is, by index in the current list, the peer's
	// index in next, or -1 for a removed one.
	from, to []int32
	// fresh are the indexes in next of the peers added or changed, in
	// order; isFresh says the same by index in next.
	fresh   []int
	isFresh []bool
}

// diffPeers checks a new peer list against the current one (mu is held)
// and returns its private copy and what changed. Only new and changed
// peers are validated and copied; the others were when they came. The
// whole list is still checked: a key or prefix of a new or changed peer
// against the other new and changed ones and against its current owner
// (Node.byKey, Node.settled) when that owner stays unchanged (a key or
// prefix of an unchanged peer is no other unchanged peer's: the current
// list was checked). With unique set, the caller knows that no key and no
// masked prefix is in two peers of the list (ParseConfig checked it), and
// only the peers themselves are checked. what names the list in errors.
func (n *Node) diffPeers(what string, peers peerSource, unique bool) (*peerDiff, error) {
	old, nNew := n.peers, peers.len()
	d := &peerDiff{peers: peers, next: make([]peerRec, nNew), from: make([]int32, nNew), to: make([]int32, len(old)), isFresh: make([]bool, nNew)}
	oldKey := func(j int) meshkey.Public { return n.stateAt[j].key }
	for j := range d.to {
		d.to[j] = -1
	}
	var added map[meshkey.Public]int // key → index in next, of the keys not in old
	for i := range nNew {
		p := peers.at(i)
		j := -1
		if i < len(old) && oldKey(i) == p.PublicKey {
			j = i // where it was: no look-up
		} else if k := i + len(old) - nNew; k >= 0 && k < len(old) && oldKey(k) == p.PublicKey {
			j = k // as far from the end as it was
		} else if ps := n.byKey.get(p.PublicKey); ps != nil {
			j = int(ps.idx)
		}
		d.from[i] = int32(j)
		if j >= 0 {
			if at := d.to[j]; at >= 0 {
				return nil, fmt.Errorf("netstack: %s[%d] and [%d]: peer %s is listed twice", what, at, i, p.PublicKey.Short())
			}
			d.to[j] = int32(i)
			if samePeer(n.peerAt(j), p) { // validated when it came, prefixes masked
				d.next[i] = old[j]
				continue
			}
		} else if !unique {
			if at, dup := added[p.PublicKey]; dup {
				return nil, fmt.Errorf("netstack: %s[%d] and [%d]: peer %s is listed twice", what, at, i, p.PublicKey.Short())
			}
			if added == nil {
				added = make(map[meshkey.Public]int)
			}
			added[p.PublicKey] = i
		}
		q, err := n.validatePeer(what, i, p)
		if err != nil {
			return nil, err
		}
		if j >= 0 && samePeer(n.peerAt(j), q) { // the same once masked
			d.next[i] = old[j]
			continue
		}
		d.next[i] = recOf(q)
		d.fresh = append(d.fresh, i)
		d.isFresh[i] = true
	}
	if unique {
		return d, nil
	}
	owner := make(map[netip.Prefix]int, len(d.fresh))
	for _, i := range d.fresh {
		for _, m := range d.next[i].ips {
			if at, dup := owner[m]; dup {
				return nil, twoOwners(what, m, peers, at, i)
			}
			owner[m] = i
			if ps, ok := n.settled.owner(m); ok && ps != nil {
				if at := d.to[ps.idx]; at >= 0 && !d.isFresh[at] {
					return nil, twoOwners(what, m, peers, int(at), i)
				}
			}
		}
	}
	return d, nil
}

// twoOwners is the error for a prefix m given to peers[i] and peers[j].
func twoOwners(what string, m netip.Prefix, peers peerSource, i, j int) error {
	i, j = min(i, j), max(i, j)
	return fmt.Errorf("netstack: %s: prefix %v is given to two peers, %s ([%d]) and %s ([%d]); WireGuard routes a prefix to one peer",
		what, m, peers.at(i).PublicKey.Short(), i, peers.at(j).PublicKey.Short(), j)
}

// validatePeer checks peers[i], p, on its own and returns its private
// copy, with masked prefixes (a prefix it lists twice, once).
func (n *Node) validatePeer(what string, i int, p Peer) (Peer, error) {
	if p.PublicKey.IsZero() {
		return Peer{}, fmt.Errorf("netstack: %s[%d].PublicKey is required", what, i)
	}
	if p.PublicKey == n.pub {
		return Peer{}, fmt.Errorf("netstack: %s[%d]: peer %s is this node's own key", what, i, p.PublicKey.Short())
	}
	if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535*time.Second {
		return Peer{}, fmt.Errorf("netstack: %s[%d].PersistentKeepalive %v is out of range (0-65535s)", what, i, p.PersistentKeepalive)
	}
	if p.Endpoint.IsValid() && p.Endpoint.Port() == 0 {
		return Peer{}, fmt.Errorf("netstack: %s[%d].Endpoint %v has port 0", what, i, p.Endpoint)
	}
	q := p
	q.Endpoint = netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port())
	q.AllowedIPs = make([]netip.Prefix, 0, len(p.AllowedIPs))
	var seen map[netip.Prefix]bool // for a long list
	if len(p.AllowedIPs) > 16 {
		seen = make(map[netip.Prefix]bool, len(p.AllowedIPs))
	}
	for _, a := range p.AllowedIPs {
		if !a.IsValid() || a.Addr().Zone() != "" {
			return Peer{}, fmt.Errorf("netstack: %s[%d].AllowedIPs: %v is not a prefix", what, i, a)
		}
		m := a.Masked()
		if seen[m] || seen == nil && slices.Contains(q.AllowedIPs, m) {
			continue // the same prefix twice: harmless
		}
		if seen != nil {
			seen[m] = true
		}
		q.AllowedIPs = append(q.AllowedIPs, m)
	}
	return q, nil
}

// NumPeers returns the number of peers in the node's peer set.
func (n *Node) NumPeers() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.peers)
}

// PeerForAddr returns the peer whose allowed IPs hold a, with WireGuard's
// meaning: the longest matching prefix wins. WireGuard delivers a packet
// only when its source lies in the sending peer's allowed IPs, and the
// node's stack takes a packet only when its source's owner is the peer the
// device holds for it (see [Node.SetPeers] and the dormant peers), so the
// source address of a mesh conn names the peer whose key decrypted it.
// While SetPeers changes the owner of a, it names no peer.
func (n *Node) PeerForAddr(a netip.Addr) (meshkey.Public, bool) {
	return n.table.Load().peer(a)
}

// onDevice reports whether a packet with address a, to or from the mesh,
// belongs to the peer the WireGuard device holds for a. The device itself
// matches a against the allowed IPs of the peers it holds, which lack the
// dormant peers' prefixes: a wider prefix of another peer (a hub's /24, a
// 0.0.0.0/0) would take a dormant peer's address. So the stack takes a
// packet only when a's owner in the whole peer set is on the device (then
// the device matched the same peer) and the link sends one only then, as a
// device holding every peer would. Addresses in flux during SetPeers and
// addresses no peer owns fail.
func (n *Node) onDevice(a netip.Addr) bool {
	_, ok := n.table.Load().sender(a)
	return ok
}

// SetPeers replaces the peer set live: it adds the new peers, removes the
// missing ones and updates the changed ones. Unchanged peers are not touched
// and keep their sessions and conns. A prefix that moves to another peer
// moves its identity with it; while the change is applied, addresses whose
// owner changes resolve to no peer, and the stack drops their packets.
// Within peers, a prefix given to two peers is an error.
func (n *Node) SetPeers(peers []Peer) error {
	_, err := n.UpdatePeers(peers)
	return err
}

// PeerChanges is what [Node.UpdatePeers] changed, by peer key, in the
// order of the old peer set (Removed) or the new one (Added, Changed).
type PeerChanges struct {
	Added, Removed []meshkey.Public
	// Changed are the peers in both sets whose settings differ (allowed
	// IPs, endpoint, preshared key or keepalive).
	Changed []meshkey.Public
}

// UpdatePeers is [Node.SetPeers], and reports what changed. With many
// peers, it spares the caller a copy of the old set to compare.
func (n *Node) UpdatePeers(peers []Peer) (PeerChanges, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isClosed {
		return PeerChanges{}, ErrClosed
	}
	d, err := n.diffPeers("SetPeers", newPeerSlice(peers), false)
	if err != nil {
		return PeerChanges{}, err
	}
	ch, err := n.applyDiff(d)
	if err == nil {
		n.sections = nil // no file's
	}
	return ch, err
}

// applyDiff makes d's list the node's peer set (mu is held): the device,
// the table, the peers' states.
func (n *Node) applyDiff(d *peerDiff) (PeerChanges, error) {
	var ch PeerChanges
	next := d.next
	nextPeer := func(i int) Peer { return next[i].peer(d.peers.at(i).PublicKey) }
	// Removals first: at the device's peer limit, a change that swaps
	// peers fits only that way. Without replace_peers, the peers not named
	// here stay as they are.
	var removals, uapi strings.Builder
	// A change that keeps every peer where it was (the same keys in the
	// same order: only settings changed, as a reload that changes a peer's
	// address) keeps the states by index and the key index as they are.
	sameOrder := len(next) == len(n.peers)
	for i, j := range d.from {
		if int(j) != i {
			sameOrder = false
			break
		}
	}
	stateAt := n.stateAt
	if !sameOrder {
		stateAt = make([]*peerState, len(next))
	}
	stayDormant := make([]bool, len(next)) // by index in next
	nDormant := 0
	var fresh []peerState // the new peers' states, allocated together
	for i := range next {
		p := nextPeer(i)
		// A peer keeps its state; a new one starts dormant, off the
		// device, until the change is applied (its prefixes are in flux
		// until then anyway).
		var ps *peerState
		if j := d.from[i]; j >= 0 {
			ps = n.stateAt[j]
		} else {
			if len(fresh) == 0 {
				// Sized by the new peers to come (not the changed ones,
				// which keep their states): one new peer's state keeps
				// the block alive.
				nNew := 0
				for _, j := range d.from[i:] {
					if j < 0 {
						nNew++
					}
				}
				fresh = newStates(nNew)
			}
			ps, fresh = &fresh[0], fresh[1:]
			ps.key = p.PublicKey
			ps.dormant.Store(true)
			ch.Added = append(ch.Added, p.PublicKey)
		}
		if !sameOrder {
			stateAt[i] = ps
		}
		existed, same := d.from[i] >= 0, !d.isFresh[i]
		if existed && !same {
			ch.Changed = append(ch.Changed, p.PublicKey)
		}
		switch {
		case existed && !ps.dormant.Load(): // on the device: it stays there
			if !same {
				writePeer(&uapi, p, true)
			}
		case startsDormant(p):
			stayDormant[i] = true
			nDormant++
		default: // new, or dormant until now, with an endpoint
			writePeer(&uapi, p, false)
		}
	}
	for j, ps := range n.stateAt {
		if d.to[j] < 0 {
			if !ps.dormant.Load() {
				fmt.Fprintf(&removals, "public_key=%s\nremove=true\n", ps.key.Hex())
			}
			ch.Removed = append(ch.Removed, ps.key)
		}
	}
	var nextTable, transTable *table
	if old := n.table.Load(); old == n.settled && len(ch.Added)+len(ch.Changed)+len(ch.Removed) < len(next)/4 {
		// A few peers changed: patch the table rather than rebuild it.
		var gone, came []Peer
		cameStates := make([]*peerState, 0, len(d.fresh))
		for j := range n.peers {
			if at := d.to[j]; at < 0 || d.isFresh[at] {
				gone = append(gone, n.peerAt(j))
			}
		}
		for _, i := range d.fresh {
			came = append(came, nextPeer(i))
			cameStates = append(cameStates, stateAt[i])
		}
		nextTable, transTable = patchTables(old, gone, came, cameStates)
	} else {
		// Many changed, or the last SetPeers failed and left a table in
		// flux: rebuild.
		nextTable = newTable(next, stateAt)
		transTable = transition(old, nextTable)
	}
	change := removals.String() + uapi.String()
	if n.deviceUnknown {
		// A failed SetPeers left the device in a state nobody knows:
		// replace its whole peer set with what this one says.
		change = "replace_peers=true\n" + deviceConfig(len(next), nextPeer, func(i int) bool { return !stayDormant[i] })
	}
	n.table.Store(transTable)
	if err := n.dev.IpcSet(change); err != nil {
		err = fmt.Errorf("netstack: SetPeers: apply to WireGuard device: %w", redactUAPIError(err, n.secrets(next)...))
		// The device may hold part of the change, and it decides who may
		// send from an address, while the table says who that is: put the
		// device back as it was, so the two agree again. If that fails
		// too, the table stays fail-closed for every prefix in flux and
		// the next SetPeers replaces the device's peer set whole.
		restore := "replace_peers=true\n" + deviceConfig(len(n.peers), n.peerAt, func(j int) bool { return !n.stateAt[j].dormant.Load() })
		if rerr := n.dev.IpcSet(restore); rerr != nil {
			n.deviceUnknown = true
			n.log.Error("netstack: SetPeers failed and the WireGuard device could not be restored; addresses in flux stay refused until a SetPeers succeeds",
				"err", redactUAPIError(rerr, n.secrets(n.peers)...))
			return PeerChanges{}, err
		}
		n.deviceUnknown = false
		n.table.Store(n.settled)
		return PeerChanges{}, err
	}
	n.deviceUnknown = false
	// The device holds every peer of next but the dormant ones now.
	for i, ps := range stateAt {
		ps.idx = int32(i)
		if !stayDormant[i] {
			ps.dormant.Store(false)
		}
	}
	n.table.Store(nextTable)
	n.settled = nextTable
	n.peers = next
	if !sameOrder {
		n.stateAt = stateAt
		n.byKey = newKeyIndex(stateAt)
	}
	n.gen++
	n.dormantN.Store(int64(nDormant))
	for _, k := range ch.Removed {
		n.log.Info("netstack: peer removed", "peer", k.String())
	}
	return ch, nil
}

// deviceConfig writes the device lines of the peers peer(i), i < n, for
// which onDevice(i) is true (the others are dormant, off the device).
func deviceConfig(n int, peer func(i int) Peer, onDevice func(i int) bool) string {
	var b strings.Builder
	for i := range n {
		if onDevice(i) {
			writePeer(&b, peer(i), false)
		}
	}
	return b.String()
}

// isPeer reports whether peer is in the node's peer set.
func (n *Node) isPeer(peer meshkey.Public) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byKey.get(peer) != nil
}

func samePeer(a, b Peer) bool {
	return a.PublicKey == b.PublicKey && a.PresharedKey == b.PresharedKey &&
		a.Endpoint == b.Endpoint && a.PersistentKeepalive/time.Second == b.PersistentKeepalive/time.Second &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs)
}
