package netstack

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
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
	if n := len(g.out); n != 1 {
		t.Errorf("after reclaim, %d held; want 1 (b[1])", n)
	}
	in := transportBufs(1, 1)
	g.enterTransport(in, sizes(in))
	g.reclaim(in)
	if n := len(g.in.entries); n != 0 {
		t.Errorf("after reclaim, %d inbound held; want 0", n)
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
	if n := len(g.in.entries); n != 1 {
		t.Errorf("%d inbound held; want 1", n)
	}
}

// TestLedgerForgivesAfterStall: outbound buffers the device let go of
// unseen do not block traffic for good: after a stall the ledger forgets
// them.
func TestLedgerForgivesAfterStall(t *testing.T) {
	const stall = 50 * time.Millisecond
	g := newLedger(3, stall)
	g.enter(outbound, testBufs(3))
	if d := waitReturns(t, g, outbound, 5*time.Second); d < stall {
		t.Errorf("wait returned after %v, before the stall of %v", d, stall)
	}
	if g.stalls.Load() != 1 || g.forgiven.Load() != 3 || len(g.out) != 0 {
		t.Errorf("stalls %d, forgiven %d, held %d; want 1, 3, 0", g.stalls.Load(), g.forgiven.Load(), len(g.out))
	}
}

// TestLedgerTracesForgivenPackets: of the packets a stall forgave, those
// that turn up afterwards (sent late, or their buffer handed out again)
// are not lost; the rest are.
func TestLedgerTracesForgivenPackets(t *testing.T) {
	g := newLedger(3, 10*time.Millisecond)
	b := testBufs(3)
	g.enter(outbound, b)
	waitReturns(t, g, outbound, 5*time.Second)
	if n := g.lost(); n != 3 {
		t.Fatalf("lost %d right after the stall; want 3", n)
	}
	g.leave(outbound, b[:1])  // sent late
	g.reclaim(b[1:2])         // handed out again, empty: the device dropped it
	g.enter(outbound, b[2:3]) // reused unseen: no evidence it left
	if n := g.lost(); n != 1 {
		t.Errorf("lost %d; want 1 (b[2] never turned up)", n)
	}
	g.leave(outbound, b[2:3])
	if n := g.lost(); n != 0 {
		t.Errorf("lost %d; want 0", n)
	}
}

// transportBufs returns n transport messages of receiver index id with
// counters 1..n, in distinct buffers.
func transportBufs(id uint32, n int) [][]byte {
	return transportFrom(id, 1, n)
}

// transportFrom is transportBufs with counters from first on.
func transportFrom(id uint32, first uint64, n int) [][]byte {
	b := testBufs(n)
	for i := range b {
		b[i][0] = 4
		binary.LittleEndian.PutUint32(b[i][4:8], id)
		binary.LittleEndian.PutUint64(b[i][8:16], first+uint64(i))
	}
	return b
}

func sizes(bufs [][]byte) []int {
	s := make([]int, len(bufs))
	for i := range s {
		s[i] = 100
	}
	return s
}

// enterIn enters bufs as received datagrams.
func enterIn(g *ledger, bufs [][]byte) { g.enterTransport(bufs, sizes(bufs)) }

// TestLedgerInboundBlocksOnALiveBacklog: a stream whose packets the device
// passes on counts its backlog, and the wait returns as it drains.
func TestLedgerInboundBlocksOnALiveBacklog(t *testing.T) {
	g := newLedger(8, time.Minute)
	g.in.window = time.Minute // credit does not run out during the test
	b := transportBufs(7, 40)
	enterIn(g, b[:20])
	g.leave(inbound, b[:20]) // passed on: credit 20
	enterIn(g, b[20:30])     // a backlog of 10 ≥ 8
	done := startWait(g, inbound)
	select {
	case <-done:
		t.Fatal("wait returned with a backlog of 10, limit 8")
	case <-time.After(50 * time.Millisecond):
	}
	// The device passes on b[24]: b[20:25] have left, 5 remain.
	g.leave(inbound, b[24:25])
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return when the backlog drained")
	}
	if n := g.in.groups[7].n; n != 5 {
		t.Errorf("%d held; want 5 (passing b[24] on drains b[20:25])", n)
	}
}

// TestLedgerInboundIgnoresWhatTheDeviceDrops: replays of a packet the
// device passed on, and packets of a group it never passes anything of,
// do not count; a blocked wait ends when a group's credit runs out.
//
// The credit window is the test's: a minute while it builds the state (a
// loaded machine can pause the test for more than the 10 ms creditWindow
// between any two lines, which took group 7's credit away before its
// packets were counted), then runOut, which must pass twice before the
// credit is gone.
func TestLedgerInboundIgnoresWhatTheDeviceDrops(t *testing.T) {
	const runOut = time.Second
	g := newLedger(8, time.Minute)
	g.in.window = time.Minute
	b := transportBufs(7, 20)
	enterIn(g, b)
	g.leave(inbound, b) // passed on: counters 1..20
	for range 100 {     // replays of counter 3, each in a new buffer
		enterIn(g, transportFrom(7, 3, 1))
	}
	enterIn(g, transportFrom(9, 1, 100)) // a group with nothing passed on
	waitReturns(t, g, inbound, 5*time.Second)
	if g.in.counted != 0 {
		t.Errorf("%d counted; want 0", g.in.counted)
	}
	// A live group whose packets then stop coming out (forgeries under its
	// index): the wait ends within two credit windows.
	enterIn(g, transportFrom(7, 100, 20))
	if g.in.counted < 8 {
		t.Fatalf("%d counted; want the limit (8)", g.in.counted)
	}
	g.mu.Lock()
	g.in.window, g.in.nextRoll = runOut, time.Now().Add(runOut)
	g.mu.Unlock()
	t.Logf("the wait took %v (credit window %v)", waitReturns(t, g, inbound, 10*runOut), runOut)
	if g.stalls.Load() != 1 {
		t.Errorf("%d stalls; want 1", g.stalls.Load())
	}
	// Nothing piles up: groups without credit are dropped.
	g.mu.Lock()
	g.in.roll(time.Now().Add(3 * runOut))
	groups, entries := len(g.in.groups), len(g.in.entries)
	g.mu.Unlock()
	if groups != 0 || entries != 0 {
		t.Errorf("%d groups, %d packets held after the credit ran out; want 0, 0", groups, entries)
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
// the ledger allows, or when the ledger counted packets that were not in
// the device: outbound packets it forgave after a stall that never turned
// up again once the traffic settled. How often the ledger stalls (waits of
// flightStall with nothing leaving, or inbound credit running out) is a
// matter of timing: a loaded machine whose device goroutines miss 20 ms
// stalls a healthy ledger too, so stalls are logged, not judged; the
// packets a healthy ledger forgives turn up late, those of a fooled one
// never do.
func checkFlights(t *testing.T, nodes ...*Node) {
	t.Helper()
	for i, n := range nodes {
		g := n.tun.l.flight
		g.mu.Lock()
		peak := g.peak
		g.mu.Unlock()
		t.Logf("node %d: device held at most %d outbound, %d inbound packets; %d stalls, %d packets forgiven", i, peak[outbound], peak[inbound], g.stalls.Load(), g.forgiven.Load())
		for d, p := range peak {
			if p > flightLimit+batchSize {
				t.Errorf("node %d direction %d: %d packets held, limit %d + a batch of %d", i, d, p, flightLimit, batchSize)
			}
		}
		// Forgiven packets still in the device are sent once it gets the
		// CPU again; give a loaded machine time for that.
		lost := g.lost()
		for deadline := time.Now().Add(30 * time.Second); lost > 0 && time.Now().Before(deadline); lost = g.lost() {
			time.Sleep(50 * time.Millisecond)
		}
		if lost > 0 {
			t.Errorf("node %d: %d of %d forgiven packets never left the device: the ledger counted packets the device had dropped", i, lost, g.forgiven.Load())
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
		held := len(g.out)
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

// TestReplayFloodCostsNoMoreThanJunk: an attacker who saw one genuine data
// packet re-sends it at 30,000 packets/s to the receiving node while a
// bulk stream runs. The device drops every copy; the stream must keep at
// least a quarter of the throughput it keeps under a flood of random
// datagrams of the same size and rate (which costs the node the same
// reads). Phases of each flood alternate, 1 s each, so a change of load
// on the machine hits both.
//
// The ratio is about 1 on a quiet machine and fell to 0.59 beside the
// race suite and three busy loops (a replay costs the device a decryption
// before its replay check, which a starved machine feels more than junk's
// drop); a receive path that replays hold shut, as before the inbound
// ledger counted only what the device passes on, measured 0.04.
func TestReplayFloodCostsNoMoreThanJunk(t *testing.T) {
	if raceEnabled {
		// Under the race detector each datagram costs the node so much that
		// 30,000/s of any kind starve the stream (measured: 0.1 MiB/s under
		// random bytes); the ratio then means nothing. .ci/run runs the
		// suite with -race; run this test without it.
		t.Skip("throughput under a 30,000 datagrams/s flood: without -race only")
	}
	const (
		rate   = 30000 // datagrams per second
		phase  = time.Second
		phases = 8 // random, replay, random, ...
	)
	var (
		mu       sync.Mutex
		captured []byte
		aPort    string
	)
	// The pair's node a gets its port only when it starts: the binds read
	// aPort under mu.
	wrap := func(b conn.Bind) conn.Bind { return &lateCapture{Bind: b, mu: &mu, port: &aPort, pkt: &captured} }
	p := newDPPair(t, 1420, true, wrap)
	mu.Lock()
	aPort = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p.a.ListenPort()).String()
	mu.Unlock()
	c, s := p.connect(t, "tcp4", "100.64.0.1:7300") // c on b sends, s on a receives

	var received atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the bulk stream, b → a, until stop
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write(buf)
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			s.SetReadDeadline(time.Now().Add(time.Second))
			n, err := s.Read(buf)
			received.Add(int64(n))
			if err != nil {
				select {
				case <-stop:
					return
				default:
				}
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	// Wait for a captured data packet of b's stream to a.
	var pkt []byte
	for deadline := time.Now().Add(10 * time.Second); pkt == nil; {
		if time.Now().After(deadline) {
			t.Fatal("no data packet to a captured")
		}
		time.Sleep(10 * time.Millisecond)
		mu.Lock()
		if captured != nil {
			pkt = slices.Clone(captured)
		}
		mu.Unlock()
	}
	junk := make([]byte, len(pkt))
	for i := range junk {
		junk[i] = byte(rand.Uint32())
	}
	junk[0] = 0xff // not a WireGuard message type
	dst, err := net.ResolveUDPAddr("udp4", aPort)
	if err != nil {
		t.Fatal(err)
	}
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	// flood sends d at rate to a for phase and returns the bytes the
	// stream moved meanwhile.
	flood := func(d []byte) (moved int64, sent int) {
		start, before := time.Now(), received.Load()
		for {
			el := time.Since(start)
			if el >= phase {
				break
			}
			for target := int(el.Seconds() * rate); sent < target; sent++ {
				u.WriteToUDP(d, dst)
			}
			time.Sleep(time.Millisecond)
		}
		return received.Load() - before, sent
	}
	var replayed, junked int64
	for i := range phases {
		if i%2 == 0 {
			m, n := flood(junk)
			junked += m
			t.Logf("random flood (%d datagrams): %.1f MiB/s", n, float64(m)/phase.Seconds()/(1<<20))
		} else {
			m, n := flood(pkt)
			replayed += m
			t.Logf("replay flood (%d datagrams): %.1f MiB/s", n, float64(m)/phase.Seconds()/(1<<20))
		}
	}
	g := p.a.tun.l.flight
	t.Logf("receiving node: %d waits ended by credit running out", g.stalls.Load())
	if junked == 0 {
		t.Fatal("the stream moved nothing under the random flood")
	}
	if r := float64(replayed) / float64(junked); r < 0.25 {
		t.Errorf("a replay flood leaves %.2f of the throughput a random flood of the same size and rate leaves; want ≥ 0.25", r)
	} else {
		t.Logf("replay/random throughput: %.2f", r)
	}
}

// lateCapture is a capturingBind whose port is known only once the node
// it captures for has started.
type lateCapture struct {
	conn.Bind
	mu   *sync.Mutex
	port *string
	pkt  *[]byte
}

func (c *lateCapture) Send(bufs [][]byte, ep conn.Endpoint) error {
	c.mu.Lock()
	if *c.port != "" && ep.DstToString() == *c.port {
		for _, b := range bufs {
			if len(b) > 1000 && b[0] == 4 {
				*c.pkt = append((*c.pkt)[:0], b...)
				break
			}
		}
	}
	c.mu.Unlock()
	return c.Bind.Send(bufs, ep)
}
