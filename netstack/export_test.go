package netstack

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

// GROMerged is how many received packets n's link has merged into others,
// for the external tests.
func GROMerged(n *Node) uint64 { return groMerged(n) }

// BulkSize is how much each direction of a bulk test moves (see bulkSize).
func BulkSize() int64 { return bulkSize() }

// DualStack reports whether n's UDP socket is our own bind on one
// dual-stack socket.
func DualStack(n *Node) bool {
	m, _ := n.dev.Bind().(*meteredBind)
	if m == nil {
		return false
	}
	w, _ := m.Bind.(*wakingBind)
	if w == nil {
		return false
	}
	b, ok := w.Bind.(*addrBind)
	if !ok {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dual
}

// StubResolver makes host names in Endpoint resolve through hosts (a
// missing name fails with "no such host (test resolver)") until tb ends,
// so that no test asks a DNS server.
func StubResolver(tb testing.TB, hosts map[string][]netip.Addr) {
	old := lookupHost
	lookupHost = func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := hosts[host]; ok {
			return a, nil
		}
		return nil, errors.New("no such host (test resolver)")
	}
	tb.Cleanup(func() { lookupHost = old })
}
