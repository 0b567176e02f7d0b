package netstack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// testBufs returns n distinct buffers, as the device's message buffers are.
func testBufs(n int) [][]byte {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, 64)
	}
	return b
}

// startWait runs wait(d) in a goroutine; the channel closes when it returns.
func startWait(g *ledger, d int) <-chan struct{} {
	done := make(chan struct{})
	go func() { g.wait(d); close(done) }()
	return done
}

// waitReturns runs wait(d) and reports how long it took, or fails after max.
func waitReturns(t *testing.T, g *ledger, d int, max time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	done := startWait(g, d)
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(max):
		t.Fatalf("wait(%d) still blocked after %v", d, max)
		return 0
	}
}

func TestLedgerWaitsForRoom(t *testing.T) {
	g := newLedger(4, time.Minute)
	b := testBufs(6)
	g.enter(outbound, b[:4])
	g.enterTransport(b[4:5], []int{100}) // inbound has room
	waitReturns(t, g, inbound, time.Second)
	done := startWait(g, outbound)
	select {
	case <-done:
		t.Fatal("wait returned with the device full")
	case <-time.After(50 * time.Millisecond):
	}
	g.leave(outbound, b[1:2]) // one sent
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return when a packet left")
	}
	if g.stalls.Load() != 0 {
		t.Errorf("%d stalls", g.stalls.Load())
	}
}

func TestLedgerReclaimsDroppedBuffers(t *testing.T) {
	g := newLedger(2, time.Minute)
	b := testBufs(4)
	g.enter(outbound, b[:2])
	// The device dropped b[0] and hands it out again: its packet left.
	g.reclaim(b[:1])
	waitReturns(t, g, outbound, time.Second)
	// A buffer of one direction comes back in the other's read.
	g.enter(outbound, b[2:3])
	g.reclaim(b[2:4])
	if n := len(g.held[outbound]); n != 1 {
		t.Errorf("after reclaim, %d held; want 1 (b[1])", n)
	}
}

func TestLedgerEntersOnlyTransportWithAPacket(t *testing.T) {
	g := newLedger(8, time.Minute)
	b := testBufs(4)
	b[0][0] = 4             // transport with a packet
	b[1][0] = 4             // keepalive (size 32)
	b[2][0] = 1             // handshake initiation
	b[3][0], b[3][1] = 4, 1 // not type 4 (little-endian 260)
	g.enterTransport(b, []int{100, keepaliveSize, 148, 100})
	if n := len(g.held[inbound]); n != 1 {
		t.Errorf("%d inbound held; want 1", n)
	}
}

// TestLedgerForgivesAfterStall: buffers the device let go of unseen do not
// block traffic for good: after a stall the ledger forgets them.
func TestLedgerForgivesAfterStall(t *testing.T) {
	const stall = 50 * time.Millisecond
	g := newLedger(3, stall)
	g.enter(inbound, testBufs(3))
	if d := waitReturns(t, g, inbound, 5*time.Second); d < stall {
		t.Errorf("wait returned after %v, before the stall of %v", d, stall)
	}
	if g.stalls.Load() != 1 || g.forgiven.Load() != 3 || len(g.held[inbound]) != 0 {
		t.Errorf("stalls %d, forgiven %d, held %d; want 1, 3, 0", g.stalls.Load(), g.forgiven.Load(), len(g.held[inbound]))
	}
}

func TestLedgerCloseEndsWaits(t *testing.T) {
	g := newLedger(1, time.Minute)
	g.enter(outbound, testBufs(1))
	done := startWait(g, outbound)
	time.Sleep(20 * time.Millisecond)
	g.close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("close did not end the wait")
	}
	waitReturns(t, g, outbound, time.Second) // and later waits return at once
}

// checkFlights fails when a node's device held more of its packets than
// the ledger allows, or when the ledger had to forgive during healthy
// traffic (its accounting of the device's buffers would be off).
func checkFlights(t *testing.T, nodes ...*Node) {
	t.Helper()
	for i, n := range nodes {
		g := n.tun.l.flight
		g.mu.Lock()
		peak := g.peak
		g.mu.Unlock()
		t.Logf("node %d: device held at most %d outbound, %d inbound packets; %d stalls", i, peak[outbound], peak[inbound], g.stalls.Load())
		for d, p := range peak {
			if p > flightLimit+batchSize {
				t.Errorf("node %d direction %d: %d packets held, limit %d + a batch of %d", i, d, p, flightLimit, batchSize)
			}
		}
		if s := g.stalls.Load(); s != 0 {
			t.Errorf("node %d: %d stalls (%d packets forgiven)", i, s, g.forgiven.Load())
		}
	}
}

// TestDeadPeerDoesNotStallLivePeer: packets for a peer that never answers
// sit in the device (staged for a handshake that never completes) or are
// dropped there, unseen by the ledger. They fill it once; it forgives
// them after a stall, and a live peer's bulk goes through with few
// stalls, not one per batch.
func TestDeadPeerDoesNotStallLivePeer(t *testing.T) {
	p := newDPPair(t, 1420, true, nil)
	dead := mustKey(t).Public()
	// An endpoint nobody listens on: the peer is on the device (not
	// dormant), and its handshakes go unanswered.
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	deadEnd := u.LocalAddr().(*net.UDPAddr).AddrPort()
	u.Close()
	peers := append(p.b.Peers(), Peer{PublicKey: dead, Endpoint: deadEnd, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.9/32")}})
	if err := p.b.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	// 3 × flightLimit dials to the dead peer: their SYNs (and the
	// retransmits) can never leave the device.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 3 * flightLimit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := p.b.Dial(ctx, "tcp4", fmt.Sprintf("100.64.0.9:%d", 1000+i)); err == nil {
				c.Close()
				t.Error("a dial to a peer that never answers succeeded")
			}
		}()
	}
	g := p.b.tun.l.flight
	deadline := time.Now().Add(10 * time.Second)
	for g.stalls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g.stalls.Load() == 0 {
		g.mu.Lock()
		held := len(g.held[outbound])
		g.mu.Unlock()
		t.Fatalf("the device held %d packets for the dead peer and the ledger never stalled: the test does not fill it", held)
	}
	c, s := p.connect(t, "tcp4", "100.64.0.1:7200")
	transfer(t, c, s, bulkSize()/4)
	wg.Wait()
	if st := g.stalls.Load(); st > 20 {
		t.Errorf("%d stalls of %v for %d dials to a dead peer; want a few", st, flightStall, 3*flightLimit)
	}
	t.Logf("%d stalls, %d packets forgiven", g.stalls.Load(), g.forgiven.Load())
}
