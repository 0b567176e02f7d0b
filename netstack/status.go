package netstack

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
)

// PeerStatus is a peer as the WireGuard device sees it, as [Node.PeerStatus]
// reports it: like one peer of `wg show`.
type PeerStatus struct {
	PublicKey  meshkey.Public
	AllowedIPs []netip.Prefix
	// Endpoint is where the peer was last heard from (or configured); zero
	// when the node has no address for it.
	Endpoint netip.AddrPort
	// LastHandshake is when the last handshake completed; zero if none has.
	LastHandshake time.Time
	// RxBytes and TxBytes count the peer's traffic, received and sent.
	RxBytes, TxBytes uint64
	// Dormant says the peer is off the device until it writes (it has no
	// endpoint; see Peer.Endpoint).
	Dormant bool
}

// PeerStatus reports every peer of the node, in the order of the peer set:
// on the device, with its endpoint, last handshake and traffic; or dormant.
func (n *Node) PeerStatus() ([]PeerStatus, error) {
	n.mu.Lock()
	peers := n.peerList()
	dormant := make(map[meshkey.Public]bool, n.dormantN.Load())
	for _, p := range peers {
		if n.isDormant(p.PublicKey) {
			dormant[p.PublicKey] = true
		}
	}
	n.mu.Unlock()

	dev := map[string]*PeerStatus{} // by hex key, from the device's state
	var cur *PeerStatus
	var sec, nsec int64
	flush := func() {
		if cur != nil && (sec != 0 || nsec != 0) {
			cur.LastHandshake = time.Unix(sec, nsec)
		}
		sec, nsec = 0, 0
	}
	err := n.deviceLines(func(line string) bool {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "public_key":
			flush()
			cur = &PeerStatus{}
			dev[v] = cur
		case "endpoint":
			if cur != nil {
				cur.Endpoint, _ = netip.ParseAddrPort(v)
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			if cur != nil {
				cur.RxBytes, _ = strconv.ParseUint(v, 10, 64)
			}
		case "tx_bytes":
			if cur != nil {
				cur.TxBytes, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		return true
	})
	flush()
	if err != nil {
		return nil, err
	}
	out := make([]PeerStatus, 0, len(peers))
	for _, p := range peers {
		st := PeerStatus{PublicKey: p.PublicKey, AllowedIPs: slices.Clone(p.AllowedIPs), Endpoint: p.Endpoint, Dormant: dormant[p.PublicKey]}
		if d, ok := dev[p.PublicKey.Hex()]; ok {
			if d.Endpoint.IsValid() {
				st.Endpoint = d.Endpoint
			}
			st.LastHandshake, st.RxBytes, st.TxBytes = d.LastHandshake, d.RxBytes, d.TxBytes
		}
		out = append(out, st)
	}
	return out, nil
}
