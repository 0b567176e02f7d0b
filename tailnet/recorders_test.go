package tailnet

import (
	"net/netip"
	"strings"
	"testing"

	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/key"
	"tailscale.com/types/views"
)

func recorderPeer(name string, online bool, tags ...string) *ipnstate.PeerStatus {
	tv := views.SliceOf(tags)
	return &ipnstate.PeerStatus{
		PublicKey: key.NewNode().Public(), DNSName: name + ".tail.example.", HostName: name, Online: online,
		TailscaleIPs: []netip.Addr{netip.MustParseAddr("fd7a:115c:a1e0::1"), netip.MustParseAddr("100.64.0.9")},
		Tags:         &tv,
	}
}

// TestRecorderTargets: a rule's tag:recorder resolves to this tailnet's
// nodes with that tag, online first, at their IPv4 address; never to a
// node shared in from another tailnet or an expired one.
func TestRecorderTargets(t *testing.T) {
	offline := recorderPeer("rec-b", false, "tag:recorder")
	online := recorderPeer("rec-c", true, "tag:recorder")
	shared := recorderPeer("rec-a", true, "tag:recorder")
	shared.ShareeNode = true
	expired := recorderPeer("rec-d", true, "tag:recorder")
	expired.Expired = true
	other := recorderPeer("server", true, "tag:server")
	got, err := recorderTargets([]*ipnstate.PeerStatus{offline, shared, expired, other, online}, "tag:recorder", 41025)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "rec-c" || got[1].Name != "rec-b" {
		t.Fatalf("targets %+v; want rec-c (online) then rec-b", got)
	}
	if got[0].Addr.String() != "100.64.0.9:41025" || got[0].Key != [32]byte(online.PublicKey.Raw32()) {
		t.Errorf("rec-c at %s key %s; want 100.64.0.9:41025 and its node key", got[0].Addr, got[0].Key.Short())
	}
	if got, err := recorderTargets([]*ipnstate.PeerStatus{other}, "server", 41025); err != nil || len(got) != 1 {
		t.Errorf("by node name: %+v, %v; want the server", got, err)
	}
	if _, err := recorderTargets([]*ipnstate.PeerStatus{shared, expired, other}, "tag:recorder", 41025); err == nil || !strings.Contains(err.Error(), "tag:recorder") {
		t.Errorf("no usable recorder: %v; want an error naming tag:recorder", err)
	}
}
