package netstack

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
	"golang.zx2c4.com/wireguard/conn"
)

// The data path under load: GSO out of gVisor, batches through the
// device, UDP GSO/GRO on the socket. These tests move real bytes between
// two in-process nodes and check every one of them.

// bulkSize is how much each direction of a bulk test moves: 1 GiB with
// SSHMESH_BULK_GIB=1; otherwise 64 MiB, or 8 MiB with -short or -race
// (the race detector slows the data path about 20×).
func bulkSize() int64 {
	switch {
	case os.Getenv("SSHMESH_BULK_GIB") == "1":
		return 1 << 30
	case testing.Short() || raceEnabled:
		return 8 << 20
	}
	return 64 << 20
}

type dpPair struct {
	a, b       *Node
	keyA, keyB meshkey.Private
}

// groModes are the two settings of Config.DisableGRO the data-path tests run in.
var groModes = []struct {
	name string
	gro  bool
}{{"gro=off", false}, {"gro=on", true}}

// groMerged is how many received packets n's link has merged into others.
func groMerged(n *Node) uint64 { return n.tun.l.groMerged.Load() }

// newDPPair starts two nodes on 127.0.0.1 with the given MTU and GRO
// setting; wrap (if not nil) wraps each node's bind.
func newDPPair(t testing.TB, mtu int, gro bool, wrap func(conn.Bind) conn.Bind) *dpPair {
	t.Helper()
	ka, kb := mustKey(t), mustKey(t)
	lo := netip.MustParseAddr("127.0.0.1")
	a, err := newNode(Config{
		PrivateKey: ka, BindAddress: lo, MTU: mtu, DisableGRO: !gro,
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32"), netip.MustParsePrefix("fd7a::1/128")},
		Peers: []Peer{{PublicKey: kb.Public(), AllowedIPs: []netip.Prefix{
			netip.MustParsePrefix("100.64.0.2/32"), netip.MustParsePrefix("fd7a::2/128")}}},
	}, wrap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := newNode(Config{
		PrivateKey: kb, BindAddress: lo, MTU: mtu, DisableGRO: !gro,
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32"), netip.MustParsePrefix("fd7a::2/128")},
		Peers: []Peer{{PublicKey: ka.Public(), Endpoint: netip.AddrPortFrom(lo, a.ListenPort()),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32"), netip.MustParsePrefix("fd7a::1/128")}}},
	}, wrap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := b.WaitHandshake(ctx, ka.Public()); err != nil {
		t.Fatal(err)
	}
	return &dpPair{a: a, b: b, keyA: ka, keyB: kb}
}

func mustKey(t testing.TB) meshkey.Private {
	t.Helper()
	k, err := meshkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// connect dials from b to a's listener at addr and returns both ends.
func (p *dpPair) connect(t testing.TB, network, addr string) (client, server net.Conn) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	l, err := p.a.Listen(network, ":"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := p.b.Dial(ctx, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c, s
}

// stream is deterministic pseudo-random bytes (a ChaCha8 stream).
func stream(seed uint64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return rand.NewChaCha8(s)
}

// transfer sends n bytes each way at once between x and y and checks
// their SHA-256 on arrival.
func transfer(t *testing.T, x, y net.Conn, n int64) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	send := func(c net.Conn, seed uint64) {
		defer wg.Done()
		if _, err := io.CopyN(c, stream(seed), n); err != nil {
			errs <- fmt.Errorf("send: %w", err)
		}
	}
	recv := func(c net.Conn, seed uint64) {
		defer wg.Done()
		want := sha256.New()
		io.CopyN(want, stream(seed), n)
		got := sha256.New()
		if _, err := io.CopyN(got, c, n); err != nil {
			errs <- fmt.Errorf("receive: %w", err)
			return
		}
		if string(got.Sum(nil)) != string(want.Sum(nil)) {
			errs <- fmt.Errorf("stream %d: SHA-256 differs", seed)
		}
	}
	deadline := time.Now().Add(10 * time.Minute)
	x.SetDeadline(deadline)
	y.SetDeadline(deadline)
	wg.Add(4)
	go send(x, 1)
	go recv(y, 1)
	go send(y, 2)
	go recv(x, 2)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestBulkChecksummed moves bulkSize() each way at once, IPv4 and IPv6,
// at several MTUs, and checks every byte.
func TestBulkChecksummed(t *testing.T) {
	n := bulkSize()
	for _, mode := range groModes {
		for _, mtu := range []int{1280, 1420, 9000} {
			p := newDPPair(t, mtu, mode.gro, nil)
			for _, tc := range []struct{ network, addr string }{
				{"tcp4", "100.64.0.1:7100"},
				{"tcp6", "[fd7a::1]:7101"},
			} {
				t.Run(fmt.Sprintf("%s/mtu%d/%s", mode.name, mtu, tc.network), func(t *testing.T) {
					c, s := p.connect(t, tc.network, tc.addr)
					start := time.Now()
					transfer(t, c, s, n)
					t.Logf("%d MiB each way in %v", n>>20, time.Since(start).Round(time.Millisecond))
				})
			}
			checkGROUse(t, mode.gro, p.a, p.b)
			checkFlights(t, p.a, p.b)
		}
	}
}

// checkGROUse fails when the nodes merged packets with GRO off, or merged
// none in a bulk transfer with it on.
func checkGROUse(t *testing.T, gro bool, nodes ...*Node) {
	t.Helper()
	var m uint64
	for _, n := range nodes {
		m += groMerged(n)
	}
	t.Logf("GRO %v: %d packets merged", gro, m)
	if gro != (m > 0) {
		t.Errorf("GRO %v, but %d packets merged", gro, m)
	}
}

// lossyBind drops and reorders outgoing datagrams at random.
type lossyBind struct {
	conn.Bind
	dropPct, reorderPct float64

	mu     sync.Mutex
	rng    *rand.Rand
	held   [][]byte // reordered: sent after the next batch
	heldTo conn.Endpoint
	stats  struct{ sent, dropped, reordered int }
}

func (l *lossyBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	l.mu.Lock()
	var out [][]byte
	for _, b := range bufs {
		r := l.rng.Float64() * 100
		switch {
		case r < l.dropPct:
			l.stats.dropped++
		case r < l.dropPct+l.reorderPct:
			l.held = append(l.held, append([]byte(nil), b...))
			l.heldTo = ep
			l.stats.reordered++
		default:
			out = append(out, b)
		}
	}
	var late [][]byte
	if len(out) > 0 && len(l.held) > 0 && l.heldTo == ep {
		late, l.held = l.held, nil
	}
	l.stats.sent += len(out)
	l.mu.Unlock()
	if len(out) > 0 {
		if err := l.Bind.Send(out, ep); err != nil {
			return err
		}
	}
	if len(late) > 0 {
		return l.Bind.Send(late, ep)
	}
	return nil
}

// TestLossAndReorder drops 1% and reorders 1% of the datagrams each node
// sends; TCP (SACK, RACK) must still deliver every byte, both ways.
func TestLossAndReorder(t *testing.T) {
	for _, mode := range groModes {
		t.Run(mode.name, func(t *testing.T) { testLossAndReorder(t, mode.gro) })
	}
}

func testLossAndReorder(t *testing.T, gro bool) {
	var binds []*lossyBind
	var mu sync.Mutex
	wrap := func(b conn.Bind) conn.Bind {
		mu.Lock()
		defer mu.Unlock()
		lb := &lossyBind{Bind: b, dropPct: 1, reorderPct: 1, rng: rand.New(rand.NewPCG(uint64(len(binds)), 7))}
		binds = append(binds, lb)
		return lb
	}
	p := newDPPair(t, 0, gro, wrap)
	n := bulkSize() / 4
	for _, tc := range []struct{ network, addr string }{
		{"tcp4", "100.64.0.1:7200"},
		{"tcp6", "[fd7a::1]:7201"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			c, s := p.connect(t, tc.network, tc.addr)
			start := time.Now()
			transfer(t, c, s, n)
			t.Logf("%d MiB each way in %v", n>>20, time.Since(start).Round(time.Millisecond))
		})
	}
	for i, b := range binds {
		b.mu.Lock()
		t.Logf("node %d: %d datagrams sent, %d dropped, %d reordered", i, b.stats.sent, b.stats.dropped, b.stats.reordered)
		if b.stats.dropped == 0 || b.stats.reordered == 0 {
			t.Errorf("node %d: no loss or reordering was injected", i)
		}
		b.mu.Unlock()
	}
}

// TestTwoPeersConcurrent has two peers upload to one node at once: every
// byte arrives on the conn of the peer that sent it (segments of two peers
// are never merged or mixed), and PeerForAddr names the right peer.
func TestTwoPeersConcurrent(t *testing.T) {
	for _, mode := range groModes {
		t.Run(mode.name, func(t *testing.T) { testTwoPeersConcurrent(t, mode.gro) })
	}
}

func testTwoPeersConcurrent(t *testing.T, gro bool) {
	lo := netip.MustParseAddr("127.0.0.1")
	ks, k1, k2 := mustKey(t), mustKey(t), mustKey(t)
	srv, err := New(Config{
		PrivateKey: ks, BindAddress: lo, DisableGRO: !gro, Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
		Peers: []Peer{
			{PublicKey: k1.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}},
			{PublicKey: k2.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.3/32")}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	l, err := srv.Listen("tcp", ":7300")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n := bulkSize() / 4
	var wg sync.WaitGroup
	for i, k := range []meshkey.Private{k1, k2} {
		addr := netip.MustParsePrefix("100.64.0." + strconv.Itoa(i+2) + "/32")
		cl, err := New(Config{
			PrivateKey: k, BindAddress: lo, DisableGRO: !gro, Addresses: []netip.Prefix{addr},
			Peers: []Peer{{PublicKey: ks.Public(), Endpoint: netip.AddrPortFrom(lo, srv.ListenPort()),
				AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c, err := cl.Dial(ctx, "tcp", "100.64.0.1:7300")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Each peer sends its own stream: seed = its last address byte.
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.CopyN(c, stream(uint64(i+2)), n)
		}()
	}
	for range 2 {
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ra := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		key, ok := srv.PeerForAddr(ra)
		last := ra.As4()[3]
		if want := []meshkey.Private{k1, k2}[last-2].Public(); !ok || key != want {
			t.Errorf("PeerForAddr(%v) = %v, %v; want %v", ra, key, ok, want)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			want, got := sha256.New(), sha256.New()
			io.CopyN(want, stream(uint64(last)), n)
			s.SetDeadline(time.Now().Add(5 * time.Minute))
			if _, err := io.CopyN(got, s, n); err != nil {
				t.Errorf("from %v: %v", ra, err)
				return
			}
			if string(got.Sum(nil)) != string(want.Sum(nil)) {
				t.Errorf("from %v: bytes differ from that peer's stream", ra)
			}
		}()
	}
	wg.Wait()
	checkGROUse(t, gro, srv)
}

// TestSmallWritesLatency does many small request/response round trips,
// an interactive session's pattern, and reports their latency; it fails
// only when they are absurdly slow (the comparison with the stock path is
// BenchmarkMeshRTT).
func TestSmallWritesLatency(t *testing.T) {
	for _, mode := range groModes {
		t.Run(mode.name, func(t *testing.T) { testSmallWritesLatency(t, mode.gro) })
	}
}

func testSmallWritesLatency(t *testing.T, gro bool) {
	p := newDPPair(t, 0, gro, nil)
	c, s := p.connect(t, "tcp", "100.64.0.1:7400")
	go io.Copy(s, s)
	msg := make([]byte, 48)
	buf := make([]byte, 48)
	var rtts []time.Duration
	for i := range 2000 {
		msg[0] = byte(i)
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		rtts = append(rtts, time.Since(start))
		if buf[0] != byte(i) {
			t.Fatalf("round trip %d: echo of another message", i)
		}
	}
	slices.Sort(rtts)
	med, p99 := rtts[len(rtts)/2], rtts[len(rtts)*99/100]
	t.Logf("2000 round trips of 48 bytes: median %v, p99 %v", med, p99)
	if med > 50*time.Millisecond {
		t.Errorf("median round trip %v: small writes are being held back", med)
	}
}
