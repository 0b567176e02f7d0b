package netstack

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// This file is the one place that creates the in-process TCP/IP stack.

const nicID = 1

// tcpBufferMax caps each TCP connection's send buffer and the window its
// receive side advertises. 2 MiB is what SSH's own channel window (2 MiB
// in OpenSSH and x/crypto/ssh) lets one session have in flight anyway, so
// it costs an SSH session nothing, even over a long round trip (20 MB/s
// at 100 ms). What part of a window waits inside the WireGuard device,
// 64 KiB of its buffers per packet, is bounded separately (flightLimit),
// not by the window.
const tcpBufferMax = 2 << 20

// rcvBufferInitial is each TCP connection's receive buffer until its
// application reads: gVisor's auto-tuning (moderate receive buffer) grows
// it, up to tcpRcvBufferMax, from what the application copied out in each
// round trip, so a conn that is read grows its window within a few round
// trips and bulk throughput does not change (netstack's BenchmarkMeshTCP).
// A conn nobody reads keeps it: a peer that opens conns and writes into
// them makes the node buffer at most this much per conn (about 1.4 times
// it in memory, gVisor's chunks around 1420-byte packets), not a full
// window. That is what bounds the pre-auth flood of sshmesh.Server: its
// queued conns are not read until they start. (gVisor's default is 1 MiB:
// 1,000 queued conns held about 800 MiB.)
const rcvBufferInitial = 32 << 10

// tcpRcvBufferMax caps each TCP connection's receive buffer. gVisor
// advertises only half of the free receive buffer and keeps the other
// half for the segments' bookkeeping (rcvAdvWndScale = 1, wndFromSpace
// and selectWindowLocked in gvisor's tcp/endpoint.go), so a 2 MiB buffer
// gives a 1 MiB window: 21 MiB/s at 42 ms, measured in issue 30. Twice
// tcpBufferMax lets auto-tuning (which grows the buffer only as fast as
// the reader takes the data) reach the 2 MiB window; the memory it holds
// is still bounded by what the sender has in flight.
const tcpRcvBufferMax = 2 * tcpBufferMax

// tcpCongestionControl is the in-process TCP's congestion control: gVisor
// offers "reno" (its default) and "cubic", and no way to plug in another
// without forking it (see doc.go, # Congestion control).
//
// Not CUBIC: in this gVisor version its congestion-avoidance step can
// take the window to zero, and a sender with a zero congestion window and
// nothing in flight never sends again and arms no timer, so the conn stops
// for good in both directions (data, and anything queued behind it: SSH
// keepalives, FIN). cubicState.getCwnd (tcp/cubic.go) moves the window
// toward the cubic target once per acked packet, cwnd += (target-cwnd)/cwnd,
// and truncates the result to int; after losses that left ssthresh at 2
// and a small WMax, the target is below 1 and an ACK for a few packets
// takes cwnd from 2 to 0 (seen: cwnd 0, ssthresh 2, nothing outstanding,
// 270 KB waiting; TestSlowReadersNoStall stalls with CUBIC in every run).
// Reno's window never drops below 1 (ssthresh at least 2). At 1% loss and
// 40 ms both hold the same window (TestWANLossyBulk: Reno 93 s, CUBIC
// 110 s for 32 MiB); without loss both grow in slow start to the receive
// window (TestWANWindow, BenchmarkMeshTCP).
const tcpCongestionControl = "reno"

// tcpMinRTO is the smallest retransmission timeout, Linux's (TCP_RTO_MIN,
// 200 ms); gVisor's default happens to be the same, set here on purpose.
const tcpMinRTO = 200 * time.Millisecond

// tcpProbe, when a test sets it before creating nodes, is called with a
// copy of a TCP endpoint's full state (sequence numbers, windows, buffers)
// after every segment it receives; nil (always, outside tests) costs
// nothing.
var tcpProbe tcp.TCPProbeFunc

func tcpProtocol() stack.TransportProtocolFactory {
	if tcpProbe != nil {
		return tcp.NewProtocolProbe(tcpProbe)
	}
	return tcp.NewProtocol
}

// stackOptions are the options newStack applies.
type stackOptions struct {
	mtu    int
	gro    bool
	ledger *ledger // the device's packets in flight (see inflight.go)
	// onDevice reports whether an address belongs to a peer the device
	// holds (see Node.onDevice); the link passes only packets from and to
	// such addresses. Nil passes all.
	onDevice func(netip.Addr) bool
}

// newStack returns a TUN device backed by a gVisor stack holding addrs, and
// the stack. The device reports no events, in particular no "up": the
// caller configures the WireGuard device fully and then brings it up
// itself. (Brought up before it is configured, a device can send its first
// handshake unconfigured and lose it; WireGuard retries only after 5 s.)
func newStack(addrs []netip.Addr, o stackOptions) (*linkDevice, *meshStack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcpProtocol(), udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	fail := func(format string, args ...any) (*linkDevice, *meshStack, error) {
		s.Close()
		return nil, nil, fmt.Errorf(format, args...)
	}
	// Set explicitly, not left to gVisor's defaults: SACK and RACK loss
	// detection (without RACK, a lost segment stalls a stream for an RTO;
	// tailscale/tailscale#20893 saw uploads 5× slower), receive buffer
	// auto-tuning from a small start (rcvBufferInitial), buffer ceilings
	// (tcpBufferMax, tcpRcvBufferMax), the congestion control
	// (tcpCongestionControl) and the minimum RTO. The rest
	// matches Linux already: initial window 10 segments (tcp.InitialCwnd),
	// maximum RTO 120 s (tcp.MaxRTO), and tail loss probes, which gVisor
	// sends whenever RACK is on (tcp/rack.go).
	sack := tcpip.TCPSACKEnabled(true)
	rack := tcpip.TCPRACKLossDetection
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcpBufferMax, Max: tcpBufferMax}
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: rcvBufferInitial, Max: tcpRcvBufferMax}
	cc := tcpip.CongestionControlOption(tcpCongestionControl)
	minRTO := tcpip.TCPMinRTOOption(tcpMinRTO)
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &rack, &moderate, &snd, &rcv, &cc, &minRTO} {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fail("set TCP option %T: %v", opt, err)
		}
	}
	l := newLink(o.mtu, o.gro, o.ledger)
	l.onDevice = o.onDevice
	if err := s.CreateNIC(nicID, l); err != nil {
		return fail("CreateNIC: %v", err)
	}
	var has4, has6 bool
	for _, a := range addrs {
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fail("AddProtocolAddress(%v): %v", a, err)
		}
		has4, has6 = has4 || a.Is4(), has6 || a.Is6()
	}
	if has4 {
		s.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
	}
	if has6 {
		s.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	}
	return &linkDevice{l: l, s: s, events: make(chan tun.Event)}, &meshStack{s: s}, nil
}

// linkDevice is the tun.Device side of a link. It reports no events.
type linkDevice struct {
	l         *link
	s         *stack.Stack
	events    chan tun.Event // never sent on; closed by Close
	closeOnce sync.Once
}

func (d *linkDevice) File() *os.File           { return nil }
func (d *linkDevice) Name() (string, error)    { return "sshmesh", nil }
func (d *linkDevice) MTU() (int, error)        { return int(d.l.mtu), nil }
func (d *linkDevice) Events() <-chan tun.Event { return d.events }

// BatchSize is the most packets one Read or Write moves; the device sizes
// its batches as the larger of this and the bind's.
func (d *linkDevice) BatchSize() int { return batchSize }

func (d *linkDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return d.l.Read(bufs, sizes, offset)
}

func (d *linkDevice) Write(bufs [][]byte, offset int) (int, error) {
	return d.l.Write(bufs, offset)
}

// Close closes the stack, the link and the event channel (ending the
// device's event goroutine).
func (d *linkDevice) Close() error {
	d.closeOnce.Do(func() {
		close(d.events)
		d.s.RemoveNIC(nicID)
		d.s.Close()
		d.l.Close()
	})
	return nil
}

// meshStack is the socket side of the stack.
type meshStack struct{ s *stack.Stack }

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	// The zero address (listen on all) needs an IPv6 endpoint: it takes
	// both families.
	proto := ipv6.ProtocolNumber
	if ap.Addr().Is4() {
		proto = ipv4.ProtocolNumber
	}
	var a tcpip.Address
	if ap.Addr().IsValid() {
		a = tcpip.AddrFromSlice(ap.Addr().AsSlice())
	}
	return tcpip.FullAddress{NIC: nicID, Addr: a, Port: ap.Port()}, proto
}

// ListenTCPAddrPort listens on ap; the zero address means all addresses
// of both families.
func (m *meshStack) ListenTCPAddrPort(ap netip.AddrPort) (*gonet.TCPListener, error) {
	fa, proto := fullAddr(ap)
	return gonet.ListenTCP(m.s, fa, proto)
}

// DialContextTCPAddrPort dials ap.
func (m *meshStack) DialContextTCPAddrPort(ctx context.Context, ap netip.AddrPort) (*gonet.TCPConn, error) {
	fa, proto := fullAddr(ap)
	return gonet.DialContextTCP(ctx, m.s, fa, proto)
}
