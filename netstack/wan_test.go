package netstack

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// wanBind delays every outgoing datagram by a fixed one-way delay and
// drops a share of them at random, keeping the order of the rest: a long,
// slightly lossy path such as a WAN link, in front of a node's UDP socket.
type wanBind struct {
	conn.Bind
	delay   time.Duration
	dropPct float64

	mu    sync.Mutex
	rng   *rand.Rand
	stats struct{ sent, dropped int }

	q    chan wanBatch // in send order; a single sender keeps it
	stop chan struct{}
}

type wanBatch struct {
	due  time.Time
	bufs [][]byte
	ep   conn.Endpoint
}

// newWANWrap returns a bind wrapper for newNode that adds delay and
// dropPct to every bind it wraps, and the wrapped binds (for their
// counts). The delaying goroutines end when the test does.
func newWANWrap(t testing.TB, delay time.Duration, dropPct float64) (func(conn.Bind) conn.Bind, func() []*wanBind) {
	var mu sync.Mutex
	var binds []*wanBind
	wrap := func(b conn.Bind) conn.Bind {
		mu.Lock()
		defer mu.Unlock()
		w := &wanBind{
			Bind: b, delay: delay, dropPct: dropPct,
			rng:  rand.New(rand.NewPCG(uint64(len(binds)), 30)),
			q:    make(chan wanBatch, 1<<16),
			stop: make(chan struct{}),
		}
		binds = append(binds, w)
		go w.run()
		t.Cleanup(func() { close(w.stop) })
		return w
	}
	return wrap, func() []*wanBind {
		mu.Lock()
		defer mu.Unlock()
		return binds
	}
}

func (w *wanBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	due := time.Now().Add(w.delay)
	w.mu.Lock()
	out := make([][]byte, 0, len(bufs))
	for _, b := range bufs {
		if w.rng.Float64()*100 < w.dropPct {
			w.stats.dropped++
			continue
		}
		out = append(out, append([]byte(nil), b...))
	}
	w.stats.sent += len(out)
	if len(out) > 0 {
		// Under the lock, so that batches enter the queue in the order
		// their due times were taken.
		select {
		case w.q <- wanBatch{due: due, bufs: out, ep: ep}:
		case <-w.stop:
		}
	}
	w.mu.Unlock()
	return nil
}

// run sends each queued batch when it is due.
func (w *wanBind) run() {
	for {
		select {
		case b := <-w.q:
			if d := time.Until(b.due); d > 0 {
				select {
				case <-time.After(d):
				case <-w.stop:
					return
				}
			}
			w.Bind.Send(b.bufs, b.ep) // a closed bind drops it, as a network would
		case <-w.stop:
			return
		}
	}
}

// TestWANLossyBulk moves 8 MiB from one node to the other over a path
// with 20 ms of delay each way (40 ms round trip) that drops 1% of the
// datagrams at random.
//
// Both of gVisor's controllers are loss-based and hold about 12 packets
// in flight at this loss rate (MSS/RTT × 1.22/√p ≈ 0.4 MiB/s): measured
// once each on a loaded 2-core machine with 32 MiB, Reno took 93 s and
// CUBIC 110 s (119 s under -race); 8 MiB takes about a quarter of that,
// and the bound is about eight times it, so a loaded machine cannot break
// it. The bound cannot tell the controllers apart; it catches what is worse than
// loss-based steady state (stalls on retransmission timeouts, broken SACK
// or RACK, a window that stops opening). A loss-tolerant controller would
// move this in a few seconds; see doc.go, # Congestion control.
//
// It once stopped for good in CI (no datagram either way for 7 minutes):
// gVisor's CUBIC had taken the sender's congestion window to zero (see
// tcpCongestionControl; TestSlowReadersNoStall reproduces it).
func TestWANLossyBulk(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 8 MiB over a lossy 40 ms path; skipped with -short")
	}
	const (
		n     = 8 << 20
		bound = 4 * time.Minute
	)
	wrap, binds := newWANWrap(t, 20*time.Millisecond, 1)
	p := newDPPair(t, 0, true, wrap)
	c, s := p.connect(t, "tcp", "100.64.0.1:7500")
	start := time.Now()
	oneWay(t, c, s, n, 10*time.Minute)
	took := time.Since(start)
	for i, b := range binds() {
		b.mu.Lock()
		t.Logf("node %d: %d datagrams sent, %d dropped", i, b.stats.sent, b.stats.dropped)
		b.mu.Unlock()
	}
	t.Logf("%d MiB over 40 ms RTT, 1%% loss: %v (%.2f MiB/s)", n>>20, took.Round(time.Millisecond), float64(n)/(1<<20)/took.Seconds())
	st := p.b.tun.s.Stats().TCP // the sender's loss recovery
	t.Logf("sender: %d segments, %d retransmitted; recoveries: %d fast (%d SACK), %d by tail loss probe, %d timeouts; spurious: %d, %d after a timeout",
		st.SegmentsSent.Value(), st.Retransmits.Value(), st.FastRecovery.Value(), st.SACKRecovery.Value(),
		st.TLPRecovery.Value(), st.Timeouts.Value(), st.SpuriousRecovery.Value(), st.SpuriousRTORecovery.Value())
	if took > bound {
		t.Errorf("took %v, more than %v", took, bound)
	}
}

// oneWay sends n bytes from x to y, checks their SHA-256, and gives up
// after limit.
func oneWay(t *testing.T, x, y net.Conn, n int64, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	x.SetDeadline(deadline)
	y.SetDeadline(deadline)
	errc := make(chan error, 1)
	go func() {
		_, err := io.CopyN(x, stream(3), n)
		errc <- err
	}()
	want, got := sha256.New(), sha256.New()
	io.CopyN(want, stream(3), n)
	if m, err := io.CopyN(got, y, n); err != nil {
		t.Fatalf("received %d of %d bytes: %v", m, n, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("send: %v", err)
	}
	if string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatal("SHA-256 differs")
	}
}

// TestWANWindow moves 32 MiB over a 40 ms round trip without loss. The
// window must be able to reach the 2 MiB that SSH's channel window allows:
// gVisor advertises half of the receive buffer, so the stack's receive
// buffer ceiling must be above 2 MiB, with auto-tuning on (with a 2 MiB
// ceiling it stopped at 1 MiB, 21 MiB/s at 42 ms in issue 30). Whether
// auto-tuning actually grows the buffer depends on the rate this machine
// reaches (it grows only when the reader takes a window's worth per round
// trip; a loaded 2-core machine may move 2 MiB/s), so the buffer reached
// is reported, not judged; bench/run --wan measures the rate.
func TestWANWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 32 MiB over a 40 ms path; skipped with -short")
	}
	const n = 32 << 20
	wrap, _ := newWANWrap(t, 20*time.Millisecond, 0)
	p := newDPPair(t, 0, true, wrap)
	c, s := p.connect(t, "tcp", "100.64.0.1:7501")
	start := time.Now()
	oneWay(t, c, s, n, 5*time.Minute)
	took := time.Since(start)
	var rcvBuf int64
	for _, ep := range p.a.tun.s.RegisteredEndpoints() {
		if e, ok := ep.(*tcp.Endpoint); ok {
			if id := e.Info().(*stack.TransportEndpointInfo).ID; id.LocalPort == 7501 {
				rcvBuf = max(rcvBuf, e.SocketOptions().GetReceiveBufferSize())
			}
		}
	}
	t.Logf("%d MiB over 40 ms RTT: %v (%.1f MiB/s); receive buffer %d KiB", n>>20, took.Round(time.Millisecond), float64(n)/(1<<20)/took.Seconds(), rcvBuf>>10)
	var rcv tcpip.TCPReceiveBufferSizeRangeOption
	var moderate tcpip.TCPModerateReceiveBufferOption
	if err := p.a.tun.s.TransportProtocolOption(tcp.ProtocolNumber, &rcv); err != nil {
		t.Fatal(err)
	}
	if err := p.a.tun.s.TransportProtocolOption(tcp.ProtocolNumber, &moderate); err != nil {
		t.Fatal(err)
	}
	if rcv.Max <= tcpBufferMax || !moderate {
		t.Errorf("receive buffer ceiling %d KiB, auto-tuning %v: the advertised window (half the buffer) cannot reach SSH's 2 MiB", rcv.Max>>10, moderate)
	}
}
