package tailnet

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

// ErrSharedNode is why a node shared into the tailnet from another one is
// not served: its user belongs to another tailnet, so the coordinator's
// word about who it is does not carry this tailnet's meaning (a login of
// another tailnet could otherwise pass as autogroup:member here).
var ErrSharedNode = errors.New("the node is shared in from another tailnet")

// ErrExpired is why a node whose key has expired is not served.
var ErrExpired = errors.New("the node's key has expired")

// identityOf maps what the coordinator says about a node (a WhoIs answer)
// to the policy's identity: Key is the node key, Node the first label of
// its MagicDNS name, Tags its tags, and Owner its user's login, except for
// a tagged node, which belongs to no user (as in Tailscale: its user is a
// placeholder such as "tagged-devices"). It returns an error for a node
// that must not be served: no node key, shared in from another tailnet, or
// expired at now.
func identityOf(w *apitype.WhoIsResponse, now time.Time) (policy.Identity, error) {
	if w == nil || w.Node == nil {
		return policy.Identity{}, errors.New("the coordinator knows no node at that address")
	}
	n := w.Node
	if n.Key.IsZero() {
		return policy.Identity{}, errors.New("the node has no node key")
	}
	if n.Sharer != 0 {
		return policy.Identity{}, ErrSharedNode
	}
	if expired(n, now) {
		return policy.Identity{}, ErrExpired
	}
	id := policy.Identity{Key: meshkey.Public(n.Key.Raw32()), Node: nodeName(n)}
	if len(n.Tags) > 0 {
		id.Tags = slices.Sorted(slices.Values(n.Tags))
		return id, nil
	}
	if w.UserProfile == nil || w.UserProfile.LoginName == "" {
		return policy.Identity{}, fmt.Errorf("the coordinator names no user for the untagged node %q", id.Node)
	}
	id.Owner = w.UserProfile.LoginName
	return id, nil
}

// expired reports whether the coordinator says n's key has expired, or its
// expiry time has passed at now.
func expired(n *tailcfg.Node, now time.Time) bool {
	return n.Expired || !n.KeyExpiry.IsZero() && !now.Before(n.KeyExpiry)
}

// nodeName is the first label of the node's MagicDNS name ("alice-laptop"
// of "alice-laptop.tail1234.ts.net."), or its computed name when it has none.
func nodeName(n *tailcfg.Node) string {
	name, _, _ := strings.Cut(strings.TrimSuffix(n.Name, "."), ".")
	if name == "" {
		name = n.ComputedName
	}
	return name
}

// sameIdentity reports whether two identities are the same node with the
// same standing for a policy: key, owner and tags (a renamed node keeps its
// sessions; a policy on a tailnet names callers by login and tag).
func sameIdentity(a, b policy.Identity) bool {
	return a.Key == b.Key && a.Owner == b.Owner && slices.Equal(a.Tags, b.Tags)
}
