package netstack_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/netstack"
)

// TestStartHandshake: StartHandshake sends an initiation at once, with no
// packet to send, and only from the node that knows the peer's endpoint.
func TestStartHandshake(t *testing.T) {
	ka, kb := newKey(t), newKey(t)
	// a holds no endpoint for b; b holds a's.
	a := newNode(t, netstack.Config{
		PrivateKey: ka,
		Addresses:  []netip.Prefix{pfx("100.64.0.1/32")},
		Peers:      []netstack.Peer{{PublicKey: kb.Public(), AllowedIPs: []netip.Prefix{pfx("100.64.0.2/32")}}},
	})
	b := newNode(t, netstack.Config{
		PrivateKey: kb,
		Addresses:  []netip.Prefix{pfx("100.64.0.2/32")},
		Peers:      []netstack.Peer{{PublicKey: ka.Public(), AllowedIPs: []netip.Prefix{pfx("100.64.0.1/32")}, Endpoint: endpointOf(a)}},
	})

	// Without an endpoint there is nothing to send to: no error, no
	// handshake.
	if err := a.StartHandshake(kb.Public()); err != nil {
		t.Fatalf("a.StartHandshake (no endpoint): %v", err)
	}
	if err := a.WaitHandshake(testCtx(t, 300*time.Millisecond), kb.Public()); err == nil {
		t.Fatal("a shook hands with b though neither sent a packet")
	}

	// a's WaitHandshake cannot start one (no endpoint): what it sees is
	// the initiation b sent.
	if err := b.StartHandshake(ka.Public()); err != nil {
		t.Fatalf("b.StartHandshake: %v", err)
	}
	if err := a.WaitHandshake(testCtx(t, 10*time.Second), kb.Public()); err != nil {
		t.Fatalf("a.WaitHandshake after b.StartHandshake: %v", err)
	}
	// Done already: nothing more to do.
	if err := b.StartHandshake(ka.Public()); err != nil {
		t.Fatalf("b.StartHandshake again: %v", err)
	}

	if err := b.StartHandshake(newKey(t).Public()); err == nil {
		t.Error("StartHandshake with a stranger's key: no error")
	}
	b.Close()
	if err := b.StartHandshake(ka.Public()); !errors.Is(err, netstack.ErrClosed) {
		t.Errorf("StartHandshake on a closed node = %v; want ErrClosed", err)
	}
}
