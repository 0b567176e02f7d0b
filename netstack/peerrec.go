package netstack

import (
	"net/netip"
	"slices"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
)

// peerRec is a validated peer as the node keeps it (Node.peers): 32 bytes
// where a Peer takes 128, since most peers of a large mesh have nothing
// but a key and a prefix. Its key is its state's (Node.stateAt, same
// index), and the settings most peers lack are out of line.
type peerRec struct {
	ips  []netip.Prefix // masked, each once; never changed (records share it)
	more *peerMore      // nil: no preshared key, no endpoint, no keepalive
}

// peerMore are a peer's settings besides its key and allowed IPs.
type peerMore struct {
	psk       meshkey.Private
	endpoint  netip.AddrPort
	keepalive time.Duration
}

// recOf returns the record of p, a validated peer; its allowed IPs are
// shared, not copied.
func recOf(p Peer) peerRec {
	r := peerRec{ips: p.AllowedIPs}
	if !p.PresharedKey.IsZero() || p.Endpoint.IsValid() || p.PersistentKeepalive != 0 {
		r.more = &peerMore{psk: p.PresharedKey, endpoint: p.Endpoint, keepalive: p.PersistentKeepalive}
	}
	return r
}

// peer returns the peer of record r, whose key is k; its allowed IPs are
// r's, not a copy.
func (r peerRec) peer(k meshkey.Public) Peer {
	p := Peer{PublicKey: k, AllowedIPs: r.ips}
	if r.more != nil {
		p.PresharedKey, p.Endpoint, p.PersistentKeepalive = r.more.psk, r.more.endpoint, r.more.keepalive
	}
	return p
}

// psk returns r's preshared key (zero for none).
func (r peerRec) psk() meshkey.Private {
	if r.more == nil {
		return meshkey.Private{}
	}
	return r.more.psk
}

// peerAt returns the node's peer i (mu is held); its allowed IPs are the
// node's own, not to be changed.
func (n *Node) peerAt(i int) Peer { return n.peers[i].peer(n.stateAt[i].key) }

// peerList returns the node's peers (mu is held); their allowed IPs are the
// node's own, not to be changed.
func (n *Node) peerList() []Peer {
	out := make([]Peer, len(n.peers))
	for i := range n.peers {
		out[i] = n.peerAt(i)
	}
	return out
}

// Peer returns the current peer with key k (a copy, allowed IPs masked),
// found through the node's key index: with many peers, what one lookup
// needs is not a copy of them all ([Node.Peers]).
func (n *Node) Peer(k meshkey.Public) (Peer, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ps := n.byKey.get(k)
	if ps == nil {
		return Peer{}, false
	}
	p := n.peerAt(int(ps.idx))
	p.AllowedIPs = slices.Clone(p.AllowedIPs)
	return p, true
}

// Peers returns a copy of the current peer set, with allowed IPs masked.
func (n *Node) Peers() []Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.peerList()
	for i := range out {
		out[i].AllowedIPs = slices.Clone(out[i].AllowedIPs)
	}
	return out
}
