package netstack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"
)

// batchSize is how many packets one read or write moves between the
// device, the socket (recvmmsg/sendmmsg) and the stack. wireguard-go's own
// bind moves 128, but the device keeps a 64 KiB buffer per packet of a
// batch for each reader (the socket's, the stack's), live all the time and
// all of it resident once traffic has passed (the runtime zeroes a buffer
// it hands out again): at 128 that is 16 MiB of heap (24 with
// wireguard-go's two sockets), at 32 4 MiB, at 16 2 MiB. 32 moved as much
// as 128 (UDP GRO and TCP GSO already move up to 64 packets per system
// call or segment); 16 took 2-3 MiB off a 501-peer server's RSS during
// and after a bulk copy (bench/mem), with its CPU per GiB within this
// machine's noise.
const batchSize = 16

// addrBind is a conn.Bind whose UDP socket is bound to one IP address,
// which wireguard-go's StdNetBind cannot do, or to all addresses of both
// families at once (one dual-stack socket). It moves datagrams in batches.
type addrBind struct {
	addr netip.Addr // the local IP, unmapped; invalid: all addresses

	// dual: the socket is IPv6 and also carries IPv4 (Linux takes IPv4
	// destinations on it). Set by Open.
	dual bool

	mu   sync.Mutex
	udp  *net.UDPConn
	pc   batchConn // the batch view of udp
	msgs sync.Pool // *[]ipv4.Message with batchSize entries, each with OOB room

	// txGSO: Send may pass runs of equal-sized datagrams to the kernel as
	// one (UDP_SEGMENT); cleared when the kernel refuses. Read with mu or
	// atomically.
	txGSO atomic.Bool
}

// UDP GSO limits: the kernel takes at most 64 segments per send, and the
// whole must fit one IP datagram.
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65535 - 40 - 8
)

// rxBatch is how many (possibly coalesced) datagrams a read takes when
// the socket delivers UDP GRO datagrams: each may hold up to 64 packets,
// so a few fill the device's batch.
const rxBatch = 16

// batchConn is the common part of ipv4.PacketConn and ipv6.PacketConn.
// ipv4.Message and ipv6.Message are both x/net's socket.Message.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

var (
	_ conn.Bind     = (*addrBind)(nil)
	_ conn.Endpoint = (*endpoint)(nil)
)

// newAddrBind returns a bind for addr; the zero Addr means all addresses
// of both families.
func newAddrBind(addr netip.Addr) *addrBind {
	b := &addrBind{addr: addr.Unmap()}
	b.msgs.New = func() any {
		ms := make([]ipv4.Message, batchSize)
		oob := make([]byte, batchSize*gsoControlSize)
		for i := range ms {
			ms[i].OOB = oob[i*gsoControlSize : (i+1)*gsoControlSize : (i+1)*gsoControlSize]
		}
		return &ms
	}
	return b
}

// Open binds the socket to the bind's address and port (0 = any free port).
func (b *addrBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.udp != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	var udp *net.UDPConn
	var err error
	if b.addr.IsValid() {
		network := "udp4"
		if b.addr.Is6() {
			network = "udp6"
		}
		udp, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.addr, port)))
	} else {
		// "udp" on the unspecified address: one IPv6 socket that takes
		// IPv4 too where the system can, else an IPv4 one.
		udp, err = net.ListenUDP("udp", &net.UDPAddr{Port: int(port)})
	}
	if err != nil {
		return nil, 0, err
	}
	setSocketBuffers(udp)
	var pc batchConn
	local := udp.LocalAddr().(*net.UDPAddr)
	if local.IP.To4() != nil {
		pc = ipv4.NewPacketConn(udp)
		b.dual = false
	} else {
		pc = v6Batch{ipv6.NewPacketConn(udp)}
		b.dual = !b.addr.IsValid()
	}
	tx, rx := udpOffload(udp)
	b.txGSO.Store(tx)
	b.udp, b.pc = udp, pc
	actual := local.AddrPort().Port()
	recv := b.receiveFunc(pc)
	if rx {
		recv = b.receiveGROFunc(pc)
	}
	return []conn.ReceiveFunc{recv}, actual, nil
}

// socketBufferSize is the UDP socket's send and receive buffer size, as in
// wireguard-go's own bind: at the default (208 KiB) a burst of batches from
// an in-process peer overflows the receive buffer and the kernel drops
// datagrams, which TCP inside the tunnel sees as loss.
const socketBufferSize = 7 << 20

// v6Batch adapts ipv6.PacketConn to batchConn; the message types are the
// same type under two names.
type v6Batch struct{ pc *ipv6.PacketConn }

func (v v6Batch) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	return v.pc.ReadBatch(ms, flags)
}

func (v v6Batch) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	return v.pc.WriteBatch(ms, flags)
}

func (b *addrBind) receiveFunc(pc batchConn) conn.ReceiveFunc {
	// last is reused while datagrams keep coming from the same address:
	// endpoints are immutable, and one goroutine calls this function.
	var last *endpoint
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		msgs := b.msgs.Get().(*[]ipv4.Message)
		defer b.msgs.Put(msgs)
		ms := (*msgs)[:min(len(bufs), len(*msgs))]
		for i := range ms {
			ms[i].Buffers = bufs[i : i+1 : i+1]
			ms[i].OOB = ms[i].OOB[:cap(ms[i].OOB)]
			ms[i].Addr = nil
			ms[i].N = 0
		}
		n, err := pc.ReadBatch(ms, 0)
		if err != nil {
			return 0, err
		}
		for i := 0; i < n; i++ {
			sizes[i] = ms[i].N
			ua, ok := ms[i].Addr.(*net.UDPAddr)
			if sizes[i] == 0 || !ok {
				sizes[i] = 0
				continue
			}
			ap := ua.AddrPort()
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			if last == nil || last.dst != ap {
				last = &endpoint{dst: ap}
			}
			eps[i] = last
		}
		for i := range ms {
			ms[i].Buffers, ms[i].Addr = nil, nil // they alias the caller's
		}
		return n, nil
	}
}

// receiveGROFunc reads from a socket with UDP GRO on: a datagram read may
// hold many of the peer's packets (segments of one size, the last maybe
// shorter). It reads up to rxBatch datagrams into its own buffers and hands
// out one packet per buf; what does not fit waits for the next call.
func (b *addrBind) receiveGROFunc(pc batchConn) conn.ReceiveFunc {
	const maxDatagram = 65535
	ms := make([]ipv4.Message, rxBatch)
	store := make([]byte, rxBatch*maxDatagram)
	oob := make([]byte, rxBatch*gsoControlSize)
	for i := range ms {
		ms[i].Buffers = net.Buffers{store[i*maxDatagram : (i+1)*maxDatagram]}
		ms[i].OOB = oob[i*gsoControlSize : (i+1)*gsoControlSize]
	}
	var (
		last   *endpoint // reused while datagrams come from one address
		n, i   int       // ms[i:n] are still to hand out
		off    int       // where ms[i]'s next packet starts
		gso    int       // ms[i]'s segment size
		fromEP *endpoint // ms[i]'s sender
	)
	// next moves to datagram i, finding its segment size and sender; false
	// when it is unusable.
	next := func() bool {
		m := &ms[i]
		ua, ok := m.Addr.(*net.UDPAddr)
		if m.N == 0 || !ok {
			return false
		}
		ap := ua.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if last == nil || last.dst != ap {
			last = &endpoint{dst: ap}
		}
		fromEP = last
		gso = gsoSizeOf(m.OOB[:m.NN])
		if gso <= 0 || gso > m.N {
			gso = m.N
		}
		off = 0
		return true
	}
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for i >= n {
			for j := range ms {
				ms[j].OOB = ms[j].OOB[:cap(ms[j].OOB)]
				ms[j].Addr, ms[j].N, ms[j].NN = nil, 0, 0
			}
			k, err := pc.ReadBatch(ms, 0)
			if err != nil {
				return 0, err
			}
			n, i = k, 0
			for i < n && !next() {
				i++
			}
		}
		k := 0
		for k < len(bufs) && i < n {
			m := &ms[i]
			end := min(off+gso, m.N)
			sizes[k] = copy(bufs[k], m.Buffers[0][off:end])
			eps[k] = fromEP
			k++
			off = end
			if off >= m.N {
				for i++; i < n && !next(); i++ {
				}
			}
		}
		return k, nil
	}
}

// Close closes the socket; the receive functions then return net.ErrClosed.
func (b *addrBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.udp == nil {
		return nil
	}
	err := b.udp.Close()
	b.udp, b.pc = nil, nil
	return err
}

// SetMark does nothing: fwmark is an OS routing feature the bind does not use.
func (b *addrBind) SetMark(uint32) error { return nil }

// Send writes bufs to ep in as few system calls as the kernel allows.
func (b *addrBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	b.mu.Lock()
	pc, dual := b.pc, b.dual
	b.mu.Unlock()
	if pc == nil {
		return net.ErrClosed
	}
	if !dual && e.dst.Addr().Is4() != isV4(pc) {
		return fmt.Errorf("netstack: endpoint %v: the UDP socket is bound to %v, another address family", e.dst, b.boundTo())
	}
	ua := e.udpAddr()
	msgs := b.msgs.Get().(*[]ipv4.Message)
	defer b.msgs.Put(msgs)
	for len(bufs) > 0 { // a batch of messages at a time, so pack cannot overflow
		n := min(len(bufs), len(*msgs))
		if err := b.sendBatch(pc, *msgs, bufs[:n], ua); err != nil {
			return err
		}
		bufs = bufs[n:]
	}
	return nil
}

// sendBatch writes at most len(ms) bufs, with UDP GSO while the kernel
// takes it.
func (b *addrBind) sendBatch(pc batchConn, msgs []ipv4.Message, bufs [][]byte, ua *net.UDPAddr) error {
	gso := b.txGSO.Load()
	ms := b.pack(msgs, bufs, ua, gso)
	err := writeAll(pc, ms)
	if err != nil && gso && isGSOError(err) {
		// The kernel (or the route's device) refuses UDP_SEGMENT: send
		// one datagram per packet from now on.
		b.txGSO.Store(false)
		ms = b.pack(msgs, bufs, ua, false)
		err = writeAll(pc, ms)
	}
	for i := range ms {
		ms[i].Buffers, ms[i].Addr = nil, nil // they alias the caller's
	}
	return err
}

// pack fills ms with bufs, one message per datagram, or with gso one per
// run of equal-sized datagrams (the run's last may be shorter) that the
// kernel cuts apart again. It returns the messages used.
func (b *addrBind) pack(ms []ipv4.Message, bufs [][]byte, ua *net.UDPAddr, gso bool) []ipv4.Message {
	k := 0
	for i := 0; i < len(bufs); {
		j := i + 1
		if gso {
			size, total := len(bufs[i]), len(bufs[i])
			for j < len(bufs) && j-i < maxGSOSegments && len(bufs[j]) <= size && total+len(bufs[j]) <= maxGSOBytes {
				total += len(bufs[j])
				j++
				if len(bufs[j-1]) < size {
					break // a shorter datagram ends the run
				}
			}
		}
		m := &ms[k]
		m.Buffers = bufs[i:j:j]
		m.Addr = ua
		m.OOB = m.OOB[:0]
		if j-i > 1 {
			m.OOB = m.OOB[:putGSOSize(m.OOB[:cap(m.OOB)], uint16(len(bufs[i])))]
		}
		k++
		i = j
	}
	return ms[:k]
}

// writeAll writes ms, in as many calls as it takes.
func writeAll(pc batchConn, ms []ipv4.Message) error {
	for start := 0; start < len(ms); {
		n, err := pc.WriteBatch(ms[start:], 0)
		if err != nil {
			return err
		}
		start += n
	}
	return nil
}

// ParseEndpoint parses an IP:port ([v6]:port) endpoint.
func (b *addrBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	if !ap.IsValid() || ap.Port() == 0 {
		return nil, errors.New("netstack: endpoint needs an IP and a port")
	}
	return &endpoint{dst: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

// BatchSize is the number of datagrams per read and write.
func (b *addrBind) BatchSize() int { return batchSize }

// isV4 reports whether pc is an IPv4 socket.
func isV4(pc batchConn) bool {
	_, ok := pc.(*ipv4.PacketConn)
	return ok
}

// boundTo describes the bind's address for errors.
func (b *addrBind) boundTo() string {
	if b.addr.IsValid() {
		return b.addr.String()
	}
	return "all addresses"
}

// endpoint is a peer's UDP address. The source is the bind's own address,
// or with all addresses the one the kernel's route picks: there is no
// sticky source to remember.
type endpoint struct {
	dst netip.AddrPort
	ua  atomic.Pointer[net.UDPAddr] // dst for the socket, made by the first Send
}

// udpAddr returns dst as a *net.UDPAddr, made once per endpoint rather
// than once per Send (the socket only reads it).
func (e *endpoint) udpAddr() *net.UDPAddr {
	if ua := e.ua.Load(); ua != nil {
		return ua
	}
	ua := net.UDPAddrFromAddrPort(e.dst)
	e.ua.Store(ua)
	return ua
}

func (e *endpoint) ClearSrc()           {}
func (e *endpoint) SrcToString() string { return "" }
func (e *endpoint) DstToString() string { return e.dst.String() }
func (e *endpoint) DstIP() netip.Addr   { return e.dst.Addr() }
func (e *endpoint) SrcIP() netip.Addr   { return netip.Addr{} }
func (e *endpoint) DstToBytes() []byte {
	b, _ := e.dst.MarshalBinary()
	return b
}
