package netstack

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// probeLog keeps the last full TCP state of every endpoint, as gVisor's
// probe reports it after each segment the endpoint receives.
type probeLog struct {
	mu   sync.Mutex
	last map[tcp.TCPEndpointID]probed
	// zeroCwnd describes the first time a sender's congestion window
	// fell to zero (it must never: nothing would ever send again).
	zeroCwnd string
}

// probed is what probeLog keeps of a state: gVisor's holds a no-copy
// field.
type probed struct {
	at       tcpip.MonotonicTime
	rcv      tcp.TCPReceiverState
	snd      tcp.TCPSenderState
	rcvBuf   tcp.TCPRcvBufState
	sndBufSz int
	sndUsed  int
}

func installProbe(t testing.TB) *probeLog {
	pl := &probeLog{last: map[tcp.TCPEndpointID]probed{}}
	tcpProbe = func(s *tcp.TCPEndpointState) {
		pl.mu.Lock()
		prev, seen := pl.last[s.ID]
		if sn := s.Sender; sn.SndCwnd <= 0 && pl.zeroCwnd == "" && seen {
			ps := prev.snd
			pl.zeroCwnd = fmt.Sprintf("port %d: cwnd %d -> %d on an ACK for %d bytes; ssthresh %d -> %d; outstanding %d -> %d; CUBIC before: WMax %.2f K %.3f WC %.2f WEst %.2f; after: WC %.2f WEst %.2f",
				s.ID.LocalPort, ps.SndCwnd, sn.SndCwnd, sn.SndUna-ps.SndUna, ps.Ssthresh, sn.Ssthresh, ps.Outstanding, sn.Outstanding,
				ps.Cubic.WMax, ps.Cubic.K, ps.Cubic.WC, ps.Cubic.WEst, sn.Cubic.WC, sn.Cubic.WEst)
		}
		pl.last[s.ID] = probed{s.SegTime, s.Receiver, s.Sender, s.RcvBufState, s.SndBufState.SndBufSize, s.SndBufState.SndBufUsed}
		pl.mu.Unlock()
	}
	t.Cleanup(func() { tcpProbe = nil })
	return pl
}

// check fails t if a sender's congestion window ever fell to zero.
func (pl *probeLog) check(t testing.TB) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.zeroCwnd != "" {
		t.Errorf("a sender's congestion window fell to zero: %s", pl.zeroCwnd)
	}
}

// describe returns the endpoint's last probed state and its state now, for
// the endpoint with the given local port and remote port.
func (pl *probeLog) describe(s *stack.Stack, local, remote uint16) string {
	out := ""
	for _, ep := range s.RegisteredEndpoints() {
		e, ok := ep.(*tcp.Endpoint)
		if !ok {
			continue
		}
		id := e.Info().(*stack.TransportEndpointInfo).ID
		if id.LocalPort != local || id.RemotePort != remote {
			continue
		}
		q, _ := e.GetSockOptInt(tcpip.ReceiveQueueSizeOption)
		sq, _ := e.GetSockOptInt(tcpip.SendQueueSizeOption)
		out += fmt.Sprintf("  now: state %v rcvbuf %d rcvqueue %d sndqueue %d\n", tcp.EndpointState(e.State()), e.SocketOptions().GetReceiveBufferSize(), q, sq)
		pl.mu.Lock()
		st, ok := pl.last[tcp.TCPEndpointID(id)]
		pl.mu.Unlock()
		if ok {
			r, sn := st.rcv, st.snd
			out += fmt.Sprintf("  last probe (%v ago): rcv: RcvNxt %v RcvAcc %v (acc-nxt %d) scale %d pending %d; rcvbuf used %d autotune %+v closed %v\n",
				time.Duration(s.Clock().NowMonotonic().Sub(st.at)), r.RcvNxt, r.RcvAcc, r.RcvAcc-r.RcvNxt, r.RcvWndScale, r.PendingBufUsed,
				st.rcvBuf.RcvBufUsed, st.rcvBuf.RcvAutoParams, st.rcvBuf.RcvClosed)
			out += fmt.Sprintf("    snd: SndUna %v SndNxt %v (nxt-una %d) SndWnd %d scale %d cwnd %d ssthresh %d outstanding %d sackedout %d MSS %d RTO %v closed %v; sndbuf size %d used %d\n",
				sn.SndUna, sn.SndNxt, sn.SndNxt-sn.SndUna, sn.SndWnd, sn.SndWndScale, sn.SndCwnd, sn.Ssthresh, sn.Outstanding, sn.SackedOut, sn.MaxPayloadSize, sn.RTO, sn.Closed,
				st.sndBufSz, st.sndUsed)
		}
		out += fmt.Sprintf("  stats: %+v\n", e.Stats())
	}
	return out
}

// TestSlowReadersNoStall: many conns at once from one node to another, the
// sender writing SSH-sized pieces, each receiver reading in small random
// pieces with pauses, as an SSH client does; every conn must carry all of
// its bytes. It fails only when a conn makes no progress at all for
// stallAfter, and then prints both ends' TCP state, or when a sender's
// congestion window falls to zero. Both happened with gVisor's CUBIC in
// every run (see tcpCongestionControl): the window fell from 2 to 0 on
// one ACK, and a sender with a zero window and nothing in flight never
// sends again nor arms a timer.
func TestSlowReadersNoStall(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 15 MiB over a lossy path; skipped with -short")
	}
	conns, size, loss := 30, 512<<10, 2.0
	if v, err := strconv.Atoi(os.Getenv("SSHMESH_STALL_CONNS")); err == nil {
		conns = v
	}
	if v, err := strconv.Atoi(os.Getenv("SSHMESH_STALL_SIZE")); err == nil {
		size = v
	}
	if v, err := strconv.ParseFloat(os.Getenv("SSHMESH_STALL_LOSS"), 64); err == nil {
		loss = v
	}
	const stallAfter = 60 * time.Second
	pl := installProbe(t)
	wrap, _ := newWANWrap(t, time.Millisecond, loss)
	p := newDPPair(t, 0, true, wrap)
	l, err := p.a.Listen("tcp", ":7600")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var servedMu sync.Mutex
	var served []net.Conn
	t.Cleanup(func() {
		servedMu.Lock()
		defer servedMu.Unlock()
		for _, s := range served {
			s.Close()
		}
	})
	go func() {
		for {
			s, err := l.Accept()
			if err != nil {
				return
			}
			servedMu.Lock()
			served = append(served, s)
			servedMu.Unlock()
			go func() {
				// Reply reader: drains what the client sends.
				go io.Copy(io.Discard, s)
				src := stream(7)
				buf := make([]byte, 32<<10)
				for left := size; left > 0; {
					n := min(left, 1+rand.IntN(len(buf)))
					io.ReadFull(src, buf[:n])
					if _, err := s.Write(buf[:n]); err != nil {
						return
					}
					left -= n
				}
			}()
		}
	}()
	got := make([]atomic.Int64, conns)
	clients := make([]net.Conn, conns)
	var wg sync.WaitGroup
	for i := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		c, err := p.b.Dial(ctx, "tcp", "100.64.0.1:7600")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 16<<10)
			var sinceAck int
			for got[i].Load() < int64(size) {
				n, err := c.Read(buf[:1+rand.IntN(len(buf))])
				got[i].Add(int64(n))
				sinceAck += n
				if sinceAck > 64<<10 { // like an SSH window adjust
					sinceAck = 0
					if _, err := c.Write(make([]byte, 36)); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
				if rand.IntN(8) == 0 {
					time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	last := make([]int64, conns)
	lastMove := make([]time.Time, conns)
	for i := range lastMove {
		lastMove[i] = time.Now()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			pl.check(t)
			for i := range conns {
				if g := got[i].Load(); g != int64(size) {
					t.Errorf("conn %d: %d of %d bytes", i, g, size)
				}
			}
			return
		case <-tick.C:
		}
		pl.mu.Lock()
		zero := pl.zeroCwnd != ""
		pl.mu.Unlock()
		if zero { // that conn will never send again: no need to wait
			pl.check(t)
			for _, c := range clients {
				c.Close()
			}
			<-done
			return
		}
		for i := range conns {
			g := got[i].Load()
			if g != last[i] || g >= int64(size) {
				last[i], lastMove[i] = g, time.Now()
				continue
			}
			if time.Since(lastMove[i]) < stallAfter {
				continue
			}
			cport := uint16(clients[i].LocalAddr().(*net.TCPAddr).Port)
			pl.check(t)
			t.Errorf("conn %d (client port %d): stuck at %d of %d bytes for %v\nclient (receiver):\n%sserver (sender):\n%s",
				i, cport, g, size, stallAfter, pl.describe(p.b.tun.s, cport, 7600), pl.describe(p.a.tun.s, 7600, cport))
			for _, c := range clients {
				c.Close()
			}
			<-done
			return
		}
	}
}
