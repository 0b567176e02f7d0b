package netstack

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.zx2c4.com/wireguard/conn"
)

// This file bounds how many of our packets sit inside the WireGuard device.
//
// wireguard-go keeps every packet it holds in a message buffer of its own,
// 64 KiB whatever the packet's size, from a pool without a bound. Between
// the TCP stack and the UDP socket a busy conn has a whole TCP window in
// flight, and whatever part of it waits inside the device (for encryption,
// for the socket, for the stack) pins 64 KiB per packet: about 95 MiB for
// a 2 MiB window of 1420-byte packets. The ledger lets at most
// flightLimit packets into the device in each direction; the rest wait
// where they cost what they weigh: in the link's queue (outbound) and in
// the kernel's socket buffer (inbound). That is the role of a NIC's ring.
//
// The device tells nobody when it is done with a buffer, so the ledger
// reads it off the buffers it sees: a packet enters when the link hands it
// to the device (Read) or the socket reads it (receive), and leaves when
// the device passes it on (Send, Write) or hands its buffer out again
// empty (a dropped packet's buffer comes back to a later Read or receive).
// A buffer the device drops and never shows again (its pool let it go) is
// forgiven: when the device holds the limit and nothing has left for
// flightStall, the ledger forgets all it holds and lets traffic on. That
// costs a stall of flightStall at most once per flightLimit packets
// forgotten, and never blocks traffic for good. Healthy traffic never
// stalls (the bulk tests check it): a forgotten packet is one the device
// dropped into its pool, such as one queued for a peer whose handshake
// never came.

// flightLimit is how many packets the device may hold in each direction
// (a read may add one batch more): 128 packets are 8 MiB of the device's
// buffers and 180 KB of data at a 1420-byte MTU, enough to keep its
// encryption workers and the socket busy (measured: the same bulk
// throughput as with no bound, and the upload peak of sshmesh serve down
// from about 100 MiB of RSS to under 60).
const flightLimit = 128

// flightStall is how long a full ledger waits for a packet to leave
// before it forgives what it holds.
const flightStall = 20 * time.Millisecond

// The two directions of a ledger.
const (
	outbound = iota // from the stack (link.Read) to the socket (bind Send)
	inbound         // from the socket (receive) to the stack (link.Write)
)

// ledger counts the device's buffers that hold one of our packets. Buffers
// are known by their address: the device hands out, sends and writes
// slices that begin at the start of its buffers. (uintptr, not a pointer,
// so the ledger keeps no buffer alive.)
type ledger struct {
	limit int
	stall time.Duration

	mu      sync.Mutex
	held    [2]map[uintptr]struct{}
	left    chan struct{} // closed (and replaced) when a packet leaves
	waiting int           // waiters on left

	peak [2]int // the most held at once, per direction (tests)

	forgiven atomic.Uint64 // packets forgotten after a stall
	stalls   atomic.Uint64 // waits that ended in forgiving
	closed   atomic.Bool   // close was called: waits return at once
}

func newLedger(limit int, stall time.Duration) *ledger {
	return &ledger{
		limit: limit,
		stall: stall,
		held:  [2]map[uintptr]struct{}{make(map[uintptr]struct{}), make(map[uintptr]struct{})},
		left:  make(chan struct{}),
	}
}

func bufAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// reclaim notes that bufs are the device's again, empty: any packet the
// ledger holds in one of them has left (the device dropped it).
func (g *ledger) reclaim(bufs [][]byte) {
	g.mu.Lock()
	n := 0
	for _, b := range bufs {
		a := bufAddr(b)
		for d := range g.held {
			if _, ok := g.held[d][a]; ok {
				delete(g.held[d], a)
				n++
			}
		}
	}
	g.wakeLocked(n)
	g.mu.Unlock()
}

// enter notes that bufs now hold packets of direction d in the device.
func (g *ledger) enter(d int, bufs [][]byte) {
	if len(bufs) == 0 {
		return
	}
	g.mu.Lock()
	for _, b := range bufs {
		g.held[d][bufAddr(b)] = struct{}{}
	}
	g.peak[d] = max(g.peak[d], len(g.held[d]))
	g.mu.Unlock()
}

// leave notes that the device has passed on the packets in bufs.
func (g *ledger) leave(d int, bufs [][]byte) {
	g.mu.Lock()
	n := len(g.held[d])
	for _, b := range bufs {
		delete(g.held[d], bufAddr(b))
	}
	g.wakeLocked(n - len(g.held[d]))
	g.mu.Unlock()
}

// wakeLocked wakes the waiters when n packets have left.
func (g *ledger) wakeLocked(n int) {
	if n > 0 && g.waiting > 0 {
		close(g.left)
		g.left = make(chan struct{})
		g.waiting = 0
	}
}

// wait returns when the device holds fewer than the limit of direction d,
// or once it has waited stall without a packet leaving (then it forgives
// all of d), or at once after close.
func (g *ledger) wait(d int) {
	g.mu.Lock()
	if len(g.held[d]) < g.limit || g.closed.Load() {
		g.mu.Unlock()
		return
	}
	var t *time.Timer
	for len(g.held[d]) >= g.limit && !g.closed.Load() {
		left := g.left
		g.waiting++
		g.mu.Unlock()
		if t == nil {
			t = time.NewTimer(g.stall)
		} else {
			t.Reset(g.stall)
		}
		select {
		case <-left:
			g.mu.Lock()
		case <-t.C:
			g.mu.Lock()
			if len(g.held[d]) >= g.limit {
				g.forgiven.Add(uint64(len(g.held[d])))
				g.stalls.Add(1)
				clear(g.held[d])
			}
		}
	}
	g.mu.Unlock()
	t.Stop()
}

// close ends all waits, now and later.
func (g *ledger) close() {
	g.closed.Store(true)
	g.mu.Lock()
	close(g.left)
	g.left = make(chan struct{})
	g.waiting = 0
	g.mu.Unlock()
}

// meteredBind is the device's bind, with the ledger's part on the socket
// side: a receive waits while the device holds the inbound limit, and a
// packet leaves the outbound ledger when the device sends it.
type meteredBind struct {
	conn.Bind
	g *ledger
}

// Open opens the bind and meters its receive functions.
func (m *meteredBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	return openWrapped(m.Bind, port, m.metered)
}

// openWrapped opens b and wraps each of its receive functions.
func openWrapped(b conn.Bind, port uint16, wrap func(conn.ReceiveFunc) conn.ReceiveFunc) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Open(port)
	for i, fn := range fns {
		fns[i] = wrap(fn)
	}
	return fns, actual, err
}

func (m *meteredBind) metered(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		m.g.reclaim(bufs)
		m.g.wait(inbound)
		n, err := fn(bufs, sizes, eps)
		m.g.enterTransport(bufs[:n], sizes[:n])
		return n, err
	}
}

// Send sends bufs; their packets have left the device.
func (m *meteredBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	err := m.Bind.Send(bufs, ep)
	m.g.leave(outbound, bufs)
	return err
}

// keepaliveSize is the size of a WireGuard transport message with no
// packet in it (header and tag); the device passes such a message on to
// no one.
const keepaliveSize = 32

// enterTransport enters the inbound datagrams that will reach the stack
// if they decrypt: transport messages (type 4) with a packet in them.
// Handshake messages go elsewhere in the device.
func (g *ledger) enterTransport(bufs [][]byte, sizes []int) {
	g.mu.Lock()
	held := g.held[inbound]
	for i, b := range bufs {
		if sizes[i] > keepaliveSize && b[0] == 4 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
			held[bufAddr(b)] = struct{}{}
		}
	}
	g.peak[inbound] = max(g.peak[inbound], len(held))
	g.mu.Unlock()
}
