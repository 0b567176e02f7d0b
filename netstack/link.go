package netstack

import (
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// link is both ends of the wire between the gVisor stack and the WireGuard
// device: a gVisor link endpoint (the stack writes packets to it) and a
// tun.Device (the device reads those packets and writes decrypted ones).
//
// Outbound, gVisor hands over TCP segments of up to 64 KiB (host GSO); Read
// cuts them into MTU-sized packets with valid checksums straight into the
// device's buffers, as many as a batch holds. Inbound, Write delivers a
// batch of packets (all from one peer: the device calls Write per peer) to
// the stack, optionally coalescing TCP segments of a flow first (GRO).
type link struct {
	mtu    uint32
	gro    bool    // coalesce inbound TCP segments; see Config.DisableGRO
	flight *ledger // bounds the packets inside the device (inflight.go)
	// onDevice says whether an address's owner is a peer on the device
	// (Node.onDevice); packets from or to other addresses are dropped.
	onDevice func(netip.Addr) bool

	dispatcher atomic.Pointer[dispatcherBox]

	mu     sync.Mutex
	queue  []*stack.PacketBuffer // outbound packets, oldest first
	head   int                   // queue[head:] are waiting
	closed bool
	ready  chan struct{} // signalled (cap 1) when queue gains packets
	done   chan struct{} // closed by Close

	// The reader's state; only the device's one TUN reader touches it.
	cur     *stack.PacketBuffer // a GSO packet partly handed out
	curPkt  []byte              // cur flattened (in scratch)
	curNext int                 // index of cur's next segment
	scratch []byte

	closeOnce sync.Once

	dropped   atomic.Uint64 // outbound packets dropped on a full queue
	foreign   atomic.Uint64 // packets dropped: their address's owner is not the peer on the device
	groMerged atomic.Uint64 // received packets merged into another (GRO)
}

type dispatcherBox struct{ d stack.NetworkDispatcher }

// queueLimit bounds the outbound queue, in packets (a GSO packet counts
// once). TCP's window keeps it far below this in practice.
const queueLimit = 1024

// gsoMaxSize is the largest TCP segment gVisor hands the link.
const gsoMaxSize = stack.GVisorGSOMaxSize

var (
	_ stack.LinkEndpoint = (*link)(nil)
	_ stack.GSOEndpoint  = (*link)(nil)
	_ tun.Device         = (*linkDevice)(nil)
)

// newLink returns a link whose device packets flight counts (the node's
// bind counts the other side).
func newLink(mtu int, gro bool, flight *ledger) *link {
	return &link{
		mtu:     uint32(mtu),
		gro:     gro,
		flight:  flight,
		ready:   make(chan struct{}, 1),
		done:    make(chan struct{}),
		scratch: make([]byte, gsoMaxSize+header.IPv6MinimumSize),
	}
}

// --- stack.LinkEndpoint ---

func (l *link) MTU() uint32                             { return l.mtu }
func (l *link) SetMTU(uint32)                           {}
func (l *link) MaxHeaderLength() uint16                 { return 0 }
func (l *link) LinkAddress() tcpip.LinkAddress          { return "" }
func (l *link) SetLinkAddress(tcpip.LinkAddress)        {}
func (l *link) Wait()                                   {}
func (l *link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (l *link) AddHeader(*stack.PacketBuffer)           {}
func (l *link) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (l *link) SetOnCloseAction(func())                 {}

// Capabilities: received packets need no checksum check. WireGuard's AEAD
// has authenticated every byte a peer sent, exactly as the kernel's
// WireGuard marks decrypted packets CHECKSUM_UNNECESSARY. Outbound
// checksums are always computed (by gVisor, or by Read for GSO segments):
// the far end may be a kernel peer that trusts them.
func (l *link) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// GSOMaxSize and SupportedGSO make gVisor's TCP hand over large segments
// with a partial (pseudo-header) checksum, which Read completes per packet.
func (l *link) GSOMaxSize() uint32               { return gsoMaxSize }
func (l *link) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

func (l *link) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		l.dispatcher.Store(nil)
		return
	}
	l.dispatcher.Store(&dispatcherBox{d})
}

func (l *link) IsAttached() bool { return l.dispatcher.Load() != nil }

// WritePackets queues outbound packets for the device's reader. On a full
// queue the rest are dropped, like a full NIC ring; TCP retransmits.
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, &tcpip.ErrClosedForSend{}
	}
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if len(l.queue)-l.head >= queueLimit {
			l.dropped.Add(uint64(pkts.Len() - n))
			break
		}
		l.queue = append(l.queue, pkt.IncRef())
		n++
	}
	l.mu.Unlock()
	select {
	case l.ready <- struct{}{}:
	default:
	}
	return n, nil
}

// pop returns the oldest queued packet, waiting for one when wait is set.
// It returns nil when the queue is empty (and !wait) or the link closed.
func (l *link) pop(wait bool) *stack.PacketBuffer {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil
		}
		if l.head < len(l.queue) {
			pkt := l.queue[l.head]
			l.queue[l.head] = nil
			l.head++
			if l.head == len(l.queue) {
				l.queue, l.head = l.queue[:0], 0
			}
			l.mu.Unlock()
			return pkt
		}
		l.mu.Unlock()
		if !wait {
			return nil
		}
		select {
		case <-l.ready:
		case <-l.done:
		}
	}
}

// Read hands the device as many outbound packets as bufs holds, waiting
// for the first, and then while the device holds flightLimit of them.
// GSO segments are cut into packets of at most the MTU.
func (l *link) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	l.flight.reclaim(bufs)
	if l.cur == nil && !l.next(true) {
		return 0, os.ErrClosed
	}
	l.flight.wait(outbound)
	for n < len(bufs) {
		if l.cur == nil && !l.next(false) {
			break
		}
		k, next := gsoSplit(l.curPkt, l.cur.GSOOptions, l.curNext, bufs[n:], sizes[n:], offset)
		n += k
		if next < 0 {
			l.cur.DecRef()
			l.cur, l.curPkt, l.curNext = nil, nil, 0
			continue
		}
		l.curNext = next
		break // bufs are full
	}
	l.flight.enter(outbound, bufs[:n])
	return n, nil
}

// next makes the oldest queued packet the one being handed out, waiting
// for one when wait is set; it drops packets to addresses whose owner is
// not on the device. It reports false when the queue is empty (and !wait)
// or the link closed.
func (l *link) next(wait bool) bool {
	for {
		pkt := l.pop(wait)
		if pkt == nil {
			return false
		}
		l.start(pkt)
		if l.onDevice == nil || l.onDevice(packetAddr(l.curPkt, false)) {
			return true
		}
		l.foreign.Add(1)
		pkt.DecRef()
		l.cur, l.curPkt, l.curNext = nil, nil, 0
	}
}

// start makes pkt the packet being handed out, flattened into scratch.
func (l *link) start(pkt *stack.PacketBuffer) {
	vl, off := pkt.AsViewList()
	b := l.scratch[:0]
	for v := vl.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		b = append(b, s[off:]...)
		off = 0
	}
	l.cur, l.curPkt, l.curNext = pkt, b, 0
}

// Write delivers decrypted packets to the stack. The device calls it with
// one peer's packets at a time.
func (l *link) Write(bufs [][]byte, offset int) (int, error) {
	l.flight.leave(inbound, bufs)
	defer forgetBuffers(bufs)
	box := l.dispatcher.Load()
	if box == nil {
		return len(bufs), nil
	}
	all := len(bufs)
	bufs = l.ownSources(bufs, offset)
	if !l.gro || len(bufs) < 2 {
		for _, b := range bufs {
			if err := deliver(box.d, b[offset:]); err != nil {
				return 0, err
			}
		}
		return all, nil
	}
	c := coalescerPool.Get().(*coalescer)
	defer coalescerPool.Put(c)
	c.coalesce(bufs, offset)
	if m := len(bufs) - len(c.items); m > 0 {
		l.groMerged.Add(uint64(m))
	}
	for k := range c.items {
		it := &c.items[k]
		if it.n == 1 {
			if err := deliver(box.d, bufs[it.head][offset:]); err != nil {
				return 0, err
			}
			continue
		}
		v := buffer.NewView(it.hdrLen + it.payload)
		c.build(it, bufs, offset, v)
		pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
		box.d.DeliverNetworkPacket(ipProto(bufs[it.head][offset]), pkb)
		pkb.DecRef()
	}
	return all, nil
}

// forgetBuffers clears the whole of bufs, up to its capacity, once the
// device's packets in it are delivered (the stack copies what it keeps).
//
// The device hands Write a slice that each peer's receive routine keeps
// and reuses for its next batch (wireguard-go's RoutineSequentialReceiver,
// bufs[:0] and append), and never reads after Write. Left as they are, its
// entries would keep the last batch's 64 KiB message buffers alive after
// the device put them back in its pool, which the garbage collector
// empties: up to a batch of them per peer that ever received one, for as
// long as that peer sends nothing more (measured with the send side's
// twin, forgetSent: 4 MiB of heap stayed live after a bulk transfer each
// way, and 50 KiB per peer that logged in once).
func forgetBuffers(bufs [][]byte) {
	clear(bufs[:cap(bufs)])
}

// ownSources returns the packets of bufs whose source address belongs to
// the peer the device holds for it, the peer that sent them (see
// Node.onDevice). It copies bufs only when it drops one.
func (l *link) ownSources(bufs [][]byte, offset int) [][]byte {
	if l.onDevice == nil {
		return bufs
	}
	for i, b := range bufs {
		if l.onDevice(packetAddr(b[offset:], true)) {
			continue
		}
		out := append(make([][]byte, 0, len(bufs)-1), bufs[:i]...)
		for _, b := range bufs[i+1:] {
			if l.onDevice(packetAddr(b[offset:], true)) {
				out = append(out, b)
			}
		}
		l.foreign.Add(uint64(len(bufs) - len(out)))
		return out
	}
	return bufs
}

// packetAddr returns the source (src) or destination address of the IP
// packet p, or the zero address when p is too short to hold it.
func packetAddr(p []byte, src bool) netip.Addr {
	switch {
	case len(p) >= header.IPv4MinimumSize && p[0]>>4 == 4:
		off := 16
		if src {
			off = 12
		}
		return netip.AddrFrom4([4]byte(p[off : off+4]))
	case len(p) >= header.IPv6MinimumSize && p[0]>>4 == 6:
		off := 24
		if src {
			off = 8
		}
		return netip.AddrFrom16([16]byte(p[off : off+16]))
	}
	return netip.Addr{}
}

// ipProto is the network protocol of a packet whose first byte is b.
func ipProto(b byte) tcpip.NetworkProtocolNumber {
	if b>>4 == 6 {
		return header.IPv6ProtocolNumber
	}
	return header.IPv4ProtocolNumber
}

// deliver hands one IP packet to the stack (which copies it).
func deliver(d stack.NetworkDispatcher, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	var proto tcpip.NetworkProtocolNumber
	switch p[0] >> 4 {
	case 4:
		proto = header.IPv4ProtocolNumber
	case 6:
		proto = header.IPv6ProtocolNumber
	default:
		return syscall.EAFNOSUPPORT
	}
	pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
	d.DeliverNetworkPacket(proto, pkb)
	pkb.DecRef()
	return nil
}

// Close stops the link: the device's Read returns os.ErrClosed and queued
// packets are released.
func (l *link) Close() {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		q := l.queue[l.head:]
		l.queue, l.head = nil, 0
		l.mu.Unlock()
		for _, pkt := range q {
			pkt.DecRef()
		}
		l.flight.close()
		close(l.done)
	})
}
