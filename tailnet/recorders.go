package tailnet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"tailscale.com/ipn/ipnstate"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/recorder"
)

// RecorderResolver resolves the names a rule's "recorders" list (tag:NAME,
// or a node's name) to the recorder nodes of the tailnet, for
// [recorder.Client.Resolve]: the nodes the coordinator says carry that tag
// (or name), online ones first, each at its first tailnet address (IPv4
// when it has one) and port. Nodes shared in from another tailnet and
// expired nodes are never recorders: their tags are not this tailnet's
// word.
func (n *Node) RecorderResolver(port uint16) func(name string) ([]recorder.Target, error) {
	return func(name string) ([]recorder.Target, error) {
		ctx, cancel := context.WithTimeout(n.ctx, whoisTimeout)
		defer cancel()
		st, err := n.lc.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("tailnet status: %w", err)
		}
		peers := make([]*ipnstate.PeerStatus, 0, len(st.Peer))
		for _, p := range st.Peer {
			peers = append(peers, p)
		}
		return recorderTargets(peers, name, port)
	}
}

// recorderTargets picks the recorder nodes called name out of peers.
func recorderTargets(peers []*ipnstate.PeerStatus, name string, port uint16) ([]recorder.Target, error) {
	var found []*ipnstate.PeerStatus
	for _, p := range peers {
		if p == nil || p.ShareeNode || p.Expired || p.PublicKey.IsZero() || !isCalled(p, name) {
			continue
		}
		found = append(found, p)
	}
	slices.SortStableFunc(found, func(a, b *ipnstate.PeerStatus) int {
		if a.Online != b.Online {
			if a.Online {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.DNSName, b.DNSName)
	})
	var out []recorder.Target
	for _, p := range found {
		addr, ok := firstAddr(p.TailscaleIPs)
		if !ok {
			continue
		}
		out = append(out, recorder.Target{
			Name: peerName(p),
			Key:  meshkey.Public(p.PublicKey.Raw32()),
			Addr: netip.AddrPortFrom(addr, port),
		})
	}
	if len(out) == 0 {
		return nil, errors.New("no node of the tailnet is " + name)
	}
	return out, nil
}

// isCalled reports whether the peer carries tag name, or (for a name that
// is not a tag) has that node name.
func isCalled(p *ipnstate.PeerStatus, name string) bool {
	if strings.HasPrefix(name, "tag:") {
		return p.Tags != nil && slices.Contains(p.Tags.AsSlice(), name)
	}
	return peerName(p) == name
}

// peerName is the first label of the peer's MagicDNS name, or its host
// name when it has none.
func peerName(p *ipnstate.PeerStatus) string {
	name, _, _ := strings.Cut(strings.TrimSuffix(p.DNSName, "."), ".")
	if name == "" {
		return p.HostName
	}
	return name
}

// firstAddr returns the first IPv4 address, else the first address.
func firstAddr(addrs []netip.Addr) (netip.Addr, bool) {
	for _, a := range addrs {
		if a.Is4() {
			return a, true
		}
	}
	if len(addrs) > 0 {
		return addrs[0], true
	}
	return netip.Addr{}, false
}
