package netstack

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
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
// reads it off what it sees.
//
// Outbound, a packet enters when the link hands it to the device (Read)
// and leaves when the device sends it (Send) or hands its buffer out again
// empty (a dropped packet's buffer comes back to a later Read or receive).
// A buffer the device drops and never shows again (its pool let it go) is
// forgiven: when the device holds the limit and nothing has left for
// flightStall, the ledger forgets all it holds and lets traffic on. Only
// our own stack's packets are counted, so only our own traffic (to a peer
// whose handshake never comes) can cost such a stall.
// Forgiven packets are traced until they turn up (sent late, or their
// buffer handed back): in healthy traffic all do, so the tests can tell a
// slow device (stalls, a matter of timing) from a fooled ledger (lost
// packets).
//
// Inbound, anyone can send us datagrams, and the device drops many of
// them without a trace: replays of a genuine packet, forgeries under a
// genuine receiver index, packets for a peer being removed. A bound that
// waited for those to leave could be held shut by whoever sends them
// (one replayed packet at 30,000/s stalled the receive path 20 ms at a
// time). So the inbound bound counts only packets it has evidence the
// device will pass on, from what the device did pass on (link.Write):
//
//   - Packets are grouped by their receiver index (one per session key of
//     a peer); the device hands each peer's packets on in the order they
//     came, so passing one on means it is done with every earlier packet
//     of its group, passed on or dropped.
//   - A packet whose counter is not above the highest the device passed
//     on in its group is a replay (or late): it is not counted.
//   - A group counts at most as many packets as it had passed on in the
//     last one or two creditWindow: a group that passes nothing on
//     (forgeries, a session that is idle while its packets are replayed)
//     counts nothing, and a stream's backlog counts in full as long as
//     the stream moves.
//
// So the inbound wait blocks only while live streams have a backlog in the
// device, and at most about 2 × creditWindow when what blocks it stops
// moving. Junk costs what it costs the device to drop it.

// flightLimit is how many packets the device may hold in each direction
// (a read may add one batch more): 128 packets are 8 MiB of the device's
// buffers and 180 KB of data at a 1420-byte MTU, enough to keep its
// encryption workers and the socket busy (measured: the same bulk
// throughput as with no bound, and the upload peak of sshmesh serve down
// from about 100 MiB of RSS to under 60).
const flightLimit = 128

// flightStall is how long a full outbound ledger waits for a packet to
// leave before it forgives what it holds.
const flightStall = 20 * time.Millisecond

// creditWindow is the period over which an inbound group's passed-on
// packets are its credit (see inbound): the credit of a group that stops
// passing packets on is gone after at most two windows.
const creditWindow = 10 * time.Millisecond

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

	mu        sync.Mutex
	out       map[uintptr]struct{} // outbound packets held
	forgotten map[uintptr]struct{} // outbound packets forgiven after a stall, until they turn up (see lost)
	in        inLedger             // inbound packets held
	left      chan struct{}        // closed (and replaced) when a packet leaves
	waiting   int                  // waiters on left

	peak [2]int // the most counted at once, per direction (tests)

	forgiven atomic.Uint64 // outbound packets forgotten after a stall
	untraced atomic.Uint64 // forgiven packets no longer traced in forgotten (it was full)
	stalls   atomic.Uint64 // waits that ended without a packet leaving
	closed   atomic.Bool   // close was called: waits return at once
}

func newLedger(limit int, stall time.Duration) *ledger {
	return &ledger{
		limit:     limit,
		stall:     stall,
		out:       make(map[uintptr]struct{}),
		forgotten: make(map[uintptr]struct{}),
		in:        inLedger{entries: make(map[uintptr]inEntry), groups: make(map[uint32]*inGroup), window: creditWindow},
		left:      make(chan struct{}),
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
		if _, ok := g.out[a]; ok {
			delete(g.out, a)
			n++
		}
		delete(g.forgotten, a)
		if g.in.forget(a) {
			n++
		}
	}
	g.wakeLocked(n)
	g.mu.Unlock()
}

// enter notes that bufs now hold outbound packets in the device. (Inbound
// packets enter by enterTransport.)
func (g *ledger) enter(d int, bufs [][]byte) {
	if d != outbound {
		panic("netstack: ledger.enter is for outbound packets")
	}
	if len(bufs) == 0 {
		return
	}
	g.mu.Lock()
	for _, b := range bufs {
		g.out[bufAddr(b)] = struct{}{}
	}
	g.peak[outbound] = max(g.peak[outbound], len(g.out))
	g.mu.Unlock()
}

// leave notes that the device has passed on the packets in bufs: sent
// them (outbound) or written them to the stack (inbound).
func (g *ledger) leave(d int, bufs [][]byte) {
	g.mu.Lock()
	n := 0
	if d == outbound {
		n = len(g.out)
		for _, b := range bufs {
			delete(g.out, bufAddr(b))
			delete(g.forgotten, bufAddr(b))
		}
		n -= len(g.out)
	} else {
		now := time.Now()
		for _, b := range bufs {
			n += g.in.passed(b, now)
		}
	}
	g.wakeLocked(n)
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

// heldLocked is what counts against the limit of direction d.
func (g *ledger) heldLocked(d int, now time.Time) int {
	if d == outbound {
		return len(g.out)
	}
	g.in.roll(now)
	return g.in.counted
}

// wait returns when the device holds fewer than the limit of direction d,
// or at once after close. Outbound, once it has waited stall without a
// packet leaving, it forgives all the device holds; inbound, the credit of
// groups that pass nothing on runs out within two creditWindows.
func (g *ledger) wait(d int) {
	g.mu.Lock()
	if g.heldLocked(d, time.Now()) < g.limit || g.closed.Load() {
		g.mu.Unlock()
		return
	}
	var t *time.Timer
	for !g.closed.Load() {
		now := time.Now()
		if g.heldLocked(d, now) < g.limit {
			break
		}
		left := g.left
		g.waiting++
		after := g.stall
		if d == inbound {
			after = g.in.nextRoll.Sub(now) // when credit may run out
		}
		g.mu.Unlock()
		if t == nil {
			t = time.NewTimer(after)
		} else {
			t.Reset(after)
		}
		select {
		case <-left:
			g.mu.Lock()
		case <-t.C:
			g.mu.Lock()
			if d == outbound && len(g.out) >= g.limit {
				g.forgiven.Add(uint64(len(g.out)))
				g.stalls.Add(1)
				g.forget()
			}
			if d == inbound && g.heldLocked(d, time.Now()) < g.limit {
				g.stalls.Add(1) // released by credit running out
			}
		}
	}
	g.mu.Unlock()
	if t != nil {
		t.Stop()
	}
}

// forgottenMax bounds the forgiven packets the ledger keeps tracing.
const forgottenMax = 8 * flightLimit

// forget forgives all outbound packets held, tracing them in forgotten.
// (Call with mu held.)
func (g *ledger) forget() {
	if len(g.forgotten)+len(g.out) > forgottenMax {
		g.untraced.Add(uint64(len(g.forgotten)))
		clear(g.forgotten)
	}
	for a := range g.out {
		g.forgotten[a] = struct{}{}
	}
	clear(g.out)
}

// lost is how many forgiven packets have not turned up since: none in
// healthy traffic once it has settled (a stall forgives packets that
// were only late), all of them when the ledger counted packets the device
// had dropped without a trace.
func (g *ledger) lost() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.untraced.Load() + uint64(len(g.forgotten))
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

// inLedger is the inbound half of a ledger (see the file's comment).
type inLedger struct {
	seq      uint64              // numbers the packets entered
	entries  map[uintptr]inEntry // packets held, by buffer
	groups   map[uint32]*inGroup // by receiver index
	counted  int                 // the sum of the groups' counted
	nextRoll time.Time           // when the credit windows move on
	window   time.Duration       // creditWindow (tests set another)
}

// inEntry is an inbound packet in the device.
type inEntry struct {
	group   uint32
	seq     uint64
	counter uint64
}

// inGroup is the packets of one receiver index in the device, oldest
// first, with what the device passed on of the group lately.
type inGroup struct {
	fifo    []inFIFO // may hold packets since forgotten (then seq differs)
	n       int      // packets held
	max     uint64   // highest counter passed on
	credit  [2]int   // packets passed on in this creditWindow and the last
	counted int      // min(n, credit[0]+credit[1])
}

type inFIFO struct {
	addr uintptr
	seq  uint64
}

// recount updates the group's counted and the total. (Call it after
// changing n or credit.)
func (in *inLedger) recount(gr *inGroup) {
	c := min(gr.n, gr.credit[0]+gr.credit[1])
	in.counted += c - gr.counted
	gr.counted = c
}

// drop removes gr when it holds nothing and has no credit left.
func (in *inLedger) drop(id uint32, gr *inGroup) {
	if gr.n == 0 && gr.credit == [2]int{} {
		delete(in.groups, id)
	}
}

// enter notes a transport message with receiver index id and counter c in
// buffer a; replays of what the group already passed on are left out.
func (in *inLedger) enter(a uintptr, id uint32, c uint64, limit int) {
	in.forget(a) // a buffer the device reuses without our seeing it
	gr := in.groups[id]
	if gr == nil {
		gr = &inGroup{}
		in.groups[id] = gr
	} else if gr.credit != [2]int{} && c <= gr.max {
		return // the device drops it (replay) or it is late: not counted
	}
	in.seq++
	in.entries[a] = inEntry{group: id, seq: in.seq, counter: c}
	gr.fifo = append(gr.fifo, inFIFO{a, in.seq})
	gr.n++
	for gr.n > limit { // more than the ledger could count: the oldest are forgiven
		in.popOldest(gr)
	}
	in.recount(gr)
}

// popOldest removes gr's oldest packet still held.
func (in *inLedger) popOldest(gr *inGroup) {
	for len(gr.fifo) > 0 {
		f := gr.fifo[0]
		gr.fifo = gr.fifo[1:]
		if e, ok := in.entries[f.addr]; ok && e.seq == f.seq {
			delete(in.entries, f.addr)
			gr.n--
			return
		}
	}
}

// forget removes the packet in buffer a, if held (its buffer is the
// device's again). It reports whether one was.
func (in *inLedger) forget(a uintptr) bool {
	e, ok := in.entries[a]
	if !ok {
		return false
	}
	delete(in.entries, a)
	gr := in.groups[e.group]
	gr.n--
	if gr.n == 0 {
		gr.fifo = gr.fifo[:0]
	}
	in.recount(gr)
	in.drop(e.group, gr)
	return true
}

// passed notes that the device wrote the packet in b to the stack: it
// and every earlier packet of its group have left. It returns how many
// left. The group and counter are read off b's header, which the device
// leaves in place (it decrypts after it) and has authenticated, so the
// group earns its credit even if the ledger had forgotten the packet.
func (in *inLedger) passed(b []byte, now time.Time) int {
	if len(b) < transportHeaderSize {
		return 0
	}
	in.roll(now)
	id, c := binary.LittleEndian.Uint32(b[4:8]), binary.LittleEndian.Uint64(b[8:16])
	gr := in.groups[id]
	if gr == nil {
		gr = &inGroup{}
		in.groups[id] = gr
	}
	n := 0
	if e, ok := in.entries[bufAddr(b)]; ok && e.group == id {
		for len(gr.fifo) > 0 && gr.fifo[0].seq <= e.seq {
			f := gr.fifo[0]
			gr.fifo = gr.fifo[1:]
			if x, ok := in.entries[f.addr]; ok && x.seq == f.seq {
				delete(in.entries, f.addr)
				gr.n--
				n++
			}
		}
		if len(gr.fifo) == 0 {
			gr.fifo = nil // let the backing array go
		}
	}
	gr.max = max(gr.max, c)
	gr.credit[0]++
	in.recount(gr)
	return n
}

// roll moves the credit windows on when creditWindow has passed, and
// drops the groups left with nothing.
func (in *inLedger) roll(now time.Time) {
	if now.Before(in.nextRoll) {
		return
	}
	moves := 2 // more than a window ago: all credit is gone
	if !in.nextRoll.IsZero() && now.Before(in.nextRoll.Add(in.window)) {
		moves = 1
	}
	in.nextRoll = now.Add(in.window)
	in.counted = 0
	for id, gr := range in.groups {
		if moves == 1 {
			gr.credit = [2]int{0, gr.credit[0]}
		} else {
			gr.credit = [2]int{}
		}
		gr.counted = min(gr.n, gr.credit[1])
		in.counted += gr.counted
		if gr.credit == [2]int{} {
			// No credit: what it holds counts for nothing; forget it,
			// so that junk does not pile up here either.
			for _, f := range gr.fifo {
				if e, ok := in.entries[f.addr]; ok && e.seq == f.seq {
					delete(in.entries, f.addr)
				}
			}
			delete(in.groups, id)
		}
	}
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

// Send sends bufs; their packets have left the device. Then it lets go of
// the device's buffers (see forgetSent).
func (m *meteredBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	err := m.Bind.Send(bufs, ep)
	m.g.leave(outbound, bufs)
	forgetSent(bufs)
	return err
}

// sentStandIn is what the entries of a sent batch point into instead of
// the device's buffers: their lengths, never their bytes, are read after
// Send. Nothing writes to it, so it stays untouched zero pages (bss).
var sentStandIn [device.MaxMessageSize]byte

// forgetSent makes the slice the device handed Send point at none of its
// buffers: each entry becomes a view of the same length into sentStandIn,
// and the entries past the batch's end, up to the slice's capacity, are
// cleared.
//
// Each peer's send routine keeps that slice and reuses it for its next
// batch (wireguard-go's RoutineSequentialSender: bufs[:0] and append),
// and after Send it reads only the entries' lengths, for the peer's byte
// count (SendBuffers). Left as they are, the entries keep the batch's
// 64 KiB message buffers alive after the device put them back in its
// pool, which the garbage collector empties: at least one buffer for
// every peer that was ever sent a packet, a whole batch's after a bulk
// download, until that peer is sent more.
func forgetSent(bufs [][]byte) {
	for i, b := range bufs {
		bufs[i] = sentStandIn[:len(b):len(b)]
	}
	clear(bufs[len(bufs):cap(bufs)])
}

// keepaliveSize is the size of a WireGuard transport message with no
// packet in it (header and tag); the device passes such a message on to
// no one.
const keepaliveSize = 32

// transportHeaderSize is the size of a transport message's header: type,
// receiver index, counter.
const transportHeaderSize = 16

// enterTransport enters the inbound datagrams that will reach the stack
// if they decrypt: transport messages (type 4) with a packet in them.
// Handshake messages go elsewhere in the device.
func (g *ledger) enterTransport(bufs [][]byte, sizes []int) {
	g.mu.Lock()
	for i, b := range bufs {
		if sizes[i] > keepaliveSize && len(b) >= transportHeaderSize && b[0] == 4 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
			g.in.enter(bufAddr(b), binary.LittleEndian.Uint32(b[4:8]), binary.LittleEndian.Uint64(b[8:16]), g.limit)
		}
	}
	g.peak[inbound] = max(g.peak[inbound], g.in.counted)
	g.mu.Unlock()
}
