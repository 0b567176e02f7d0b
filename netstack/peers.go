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

// validatePeers checks a peer list and returns a private copy of it with
// masked prefixes. what names the list in errors.
func (n *Node) validatePeers(what string, peers []Peer) ([]Peer, error) {
	out := make([]Peer, len(peers))
	keys := make(map[meshkey.Public]int, len(peers))
	owner := make(map[netip.Prefix]int, len(peers))
	for i, p := range peers {
		if p.PublicKey.IsZero() {
			return nil, fmt.Errorf("netstack: %s[%d].PublicKey is required", what, i)
		}
		if p.PublicKey == n.pub {
			return nil, fmt.Errorf("netstack: %s[%d]: peer %s is this node's own key", what, i, p.PublicKey.Short())
		}
		if j, dup := keys[p.PublicKey]; dup {
			return nil, fmt.Errorf("netstack: %s[%d] and [%d]: peer %s is listed twice", what, j, i, p.PublicKey.Short())
		}
		keys[p.PublicKey] = i
		if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535*time.Second {
			return nil, fmt.Errorf("netstack: %s[%d].PersistentKeepalive %v is out of range (0-65535s)", what, i, p.PersistentKeepalive)
		}
		if p.Endpoint.IsValid() && p.Endpoint.Port() == 0 {
			return nil, fmt.Errorf("netstack: %s[%d].Endpoint %v has port 0", what, i, p.Endpoint)
		}
		q := p
		q.Endpoint = netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port())
		q.AllowedIPs = make([]netip.Prefix, 0, len(p.AllowedIPs))
		for _, a := range p.AllowedIPs {
			if !a.IsValid() || a.Addr().Zone() != "" {
				return nil, fmt.Errorf("netstack: %s[%d].AllowedIPs: %v is not a prefix", what, i, a)
			}
			m := a.Masked()
			if j, dup := owner[m]; dup {
				if j == i {
					continue // the same peer twice: harmless
				}
				return nil, fmt.Errorf("netstack: %s: prefix %v is given to two peers, %s ([%d]) and %s ([%d]); WireGuard routes a prefix to one peer",
					what, m, peers[j].PublicKey.Short(), j, p.PublicKey.Short(), i)
			}
			owner[m] = i
			q.AllowedIPs = append(q.AllowedIPs, m)
		}
		out[i] = q
	}
	return out, nil
}

// Peers returns a copy of the current peer set, with allowed IPs masked.
func (n *Node) Peers() []Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Peer, len(n.peers))
	for i, p := range n.peers {
		p.AllowedIPs = slices.Clone(p.AllowedIPs)
		out[i] = p
	}
	return out
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
	var ch PeerChanges
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isClosed {
		return ch, ErrClosed
	}
	next, err := n.validatePeers("SetPeers", peers)
	if err != nil {
		return ch, err
	}
	// Removals first: at the device's peer limit, a change that swaps
	// peers fits only that way. Without replace_peers, the peers not named
	// here stay as they are.
	var removals, uapi strings.Builder
	states := make(map[meshkey.Public]*peerState, len(next))
	stayDormant := make([]bool, len(next)) // by index in next
	isNew := make([]bool, len(next))       // added or changed, by index in next
	nDormant := 0
	for i, p := range next {
		// A peer keeps its state; a new one starts dormant, off the
		// device, until the change is applied (its prefixes are in flux
		// until then anyway).
		ps := n.states[p.PublicKey]
		existed := ps != nil
		wasDormant := existed && ps.dormant.Load()
		if !existed {
			ps = &peerState{key: p.PublicKey}
			ps.dormant.Store(true)
		}
		states[p.PublicKey] = ps
		same := existed && samePeer(n.peers[ps.idx], p)
		switch {
		case !existed:
			ch.Added = append(ch.Added, p.PublicKey)
			isNew[i] = true
		case !same:
			ch.Changed = append(ch.Changed, p.PublicKey)
			isNew[i] = true
		}
		switch {
		case existed && !wasDormant: // on the device: it stays there
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
	for _, p := range n.peers {
		if _, kept := states[p.PublicKey]; !kept {
			if !n.isDormant(p.PublicKey) {
				fmt.Fprintf(&removals, "public_key=%s\nremove=true\n", p.PublicKey.Hex())
			}
			ch.Removed = append(ch.Removed, p.PublicKey)
		}
	}
	var nextTable, transTable *table
	if old := n.table.Load(); old == n.settled && len(ch.Added)+len(ch.Changed)+len(ch.Removed) < len(next)/4 {
		// A few peers changed: patch the table rather than rebuild it.
		var gone, came []Peer
		for _, k := range ch.Removed {
			gone = append(gone, n.peers[n.states[k].idx])
		}
		for _, k := range ch.Changed {
			gone = append(gone, n.peers[n.states[k].idx])
		}
		for i, p := range next {
			if isNew[i] {
				came = append(came, p)
			}
		}
		nextTable, transTable = patchTables(old, gone, came, states)
	} else {
		// Many changed, or the last SetPeers failed and left a table in
		// flux: rebuild.
		nextTable = newTable(next, states)
		transTable = transition(old, nextTable)
	}
	change := removals.String() + uapi.String()
	if n.deviceUnknown {
		// A failed SetPeers left the device in a state nobody knows:
		// replace its whole peer set with what this one says.
		change = "replace_peers=true\n" + deviceConfig(next, func(i int) bool { return !stayDormant[i] })
	}
	n.table.Store(transTable)
	if err := n.dev.IpcSet(change); err != nil {
		err = fmt.Errorf("netstack: SetPeers: apply to WireGuard device: %w", redactUAPIError(err, n.secrets(next)...))
		// The device may hold part of the change, and it decides who may
		// send from an address, while the table says who that is: put the
		// device back as it was, so the two agree again. If that fails
		// too, the table stays fail-closed for every prefix in flux and
		// the next SetPeers replaces the device's peer set whole.
		restore := "replace_peers=true\n" + deviceConfig(n.peers, func(i int) bool { return !n.isDormant(n.peers[i].PublicKey) })
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
	for i, p := range next {
		ps := states[p.PublicKey]
		ps.idx = int32(i)
		if !stayDormant[i] {
			ps.dormant.Store(false)
		}
	}
	n.table.Store(nextTable)
	n.settled = nextTable
	n.peers = next
	n.states = states
	n.dormantN.Store(int64(nDormant))
	for _, k := range ch.Removed {
		n.log.Info("netstack: peer removed", "peer", k.String())
	}
	return ch, nil
}

// deviceConfig writes the device lines of the peers for which onDevice(i)
// is true (the others are dormant, off the device).
func deviceConfig(peers []Peer, onDevice func(i int) bool) string {
	var b strings.Builder
	for i, p := range peers {
		if onDevice(i) {
			writePeer(&b, p, false)
		}
	}
	return b.String()
}

// isPeer reports whether peer is in the node's peer set.
func (n *Node) isPeer(peer meshkey.Public) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.states[peer] != nil
}

func samePeer(a, b Peer) bool {
	return a.PublicKey == b.PublicKey && a.PresharedKey == b.PresharedKey &&
		a.Endpoint == b.Endpoint && a.PersistentKeepalive/time.Second == b.PersistentKeepalive/time.Second &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs)
}
