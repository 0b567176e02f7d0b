package netstack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/conn"
)

// batchSize is how many datagrams one read or write system call moves
// (recvmmsg/sendmmsg), as in wireguard-go's own bind.
const batchSize = conn.IdealBatchSize

// addrBind is a conn.Bind whose UDP socket is bound to one IP address,
// which wireguard-go's StdNetBind cannot do. It serves one address family
// (that of the address) and moves datagrams in batches.
type addrBind struct {
	addr netip.Addr // the local IP, unmapped

	mu   sync.Mutex
	udp  *net.UDPConn
	pc   batchConn // the batch view of udp
	msgs sync.Pool // *[]ipv4.Message with batchSize entries
}

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

func newAddrBind(addr netip.Addr) *addrBind {
	b := &addrBind{addr: addr.Unmap()}
	b.msgs.New = func() any {
		ms := make([]ipv4.Message, batchSize)
		for i := range ms {
			ms[i].Buffers = make(net.Buffers, 1)
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
	network := "udp4"
	if b.addr.Is6() {
		network = "udp6"
	}
	udp, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.addr, port)))
	if err != nil {
		return nil, 0, err
	}
	setSocketBuffers(udp)
	var pc batchConn
	if b.addr.Is4() {
		pc = ipv4.NewPacketConn(udp)
	} else {
		pc = v6Batch{ipv6.NewPacketConn(udp)}
	}
	b.udp, b.pc = udp, pc
	actual := udp.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	return []conn.ReceiveFunc{b.receiveFunc(pc)}, actual, nil
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
		ms := (*msgs)[:len(bufs)]
		for i := range ms {
			ms[i].Buffers[0] = bufs[i]
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
			ms[i].Buffers[0] = nil
		}
		return n, nil
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
	pc := b.pc
	b.mu.Unlock()
	if pc == nil {
		return net.ErrClosed
	}
	if e.dst.Addr().Is4() != b.addr.Is4() {
		return fmt.Errorf("netstack: endpoint %v: the UDP socket is bound to %v, another address family", e.dst, b.addr)
	}
	ua := net.UDPAddrFromAddrPort(e.dst)
	msgs := b.msgs.Get().(*[]ipv4.Message)
	defer b.msgs.Put(msgs)
	ms := (*msgs)[:len(bufs)]
	for i := range ms {
		ms[i].Buffers[0] = bufs[i]
		ms[i].Addr = ua
	}
	var err error
	for start := 0; start < len(ms); {
		var n int
		n, err = pc.WriteBatch(ms[start:], 0)
		if err != nil {
			break
		}
		start += n
	}
	for i := range ms {
		ms[i].Buffers[0] = nil
		ms[i].Addr = nil
	}
	return err
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

// endpoint is a peer's UDP address. The source is always the bind's own
// address, so there is no sticky source to remember.
type endpoint struct{ dst netip.AddrPort }

func (e *endpoint) ClearSrc()           {}
func (e *endpoint) SrcToString() string { return "" }
func (e *endpoint) DstToString() string { return e.dst.String() }
func (e *endpoint) DstIP() netip.Addr   { return e.dst.Addr() }
func (e *endpoint) SrcIP() netip.Addr   { return netip.Addr{} }
func (e *endpoint) DstToBytes() []byte {
	b, _ := e.dst.MarshalBinary()
	return b
}
