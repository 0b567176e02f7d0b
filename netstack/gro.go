package netstack

import (
	"encoding/binary"
	"math/bits"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Inbound GRO: our own coalescing of a batch's TCP segments, not gVisor's.
//
// gVisor's NIC has a GRO of its own (stack.NICOptions / GROTimeout), but
// it keeps per-NIC flow buckets and a flush timer shared by every caller,
// and wireguard-go calls the device's Write from one goroutine per peer at
// once. Tailscale turned gVisor's GRO on in 2024 and off again after a
// SIGSEGV in its merge code (tailscale/tailscale#13138), then re-enabled
// GRO only with a coalescer whose state lives for one Write call
// (tailscale/tailscale#13172). The coalescer here follows that shape: its
// state belongs to one Write call (pooled, so no allocation), it never
// holds a packet past the end of the call, and it has no timer.
//
// Only segments of one flow merge: the flow key holds the IP version, both
// addresses and both ports. The device hands Write one peer's packets, and
// an inner source address belongs to one peer only (the peer table refuses
// a prefix in two peers), so a merge never joins two peers' packets either,
// whatever batch it is given.

// groMaxPacket is the largest packet a merge may build: IPv4's total
// length and gVisor's largest buffer chunk.
const groMaxPacket = 65535

// groScan is how many of the batch's latest items a packet is compared
// with to find its flow's latest item. Missing it only costs a merge.
const groScan = 8

// groItem is one packet to deliver: a single packet of the batch, or a run
// of merged TCP segments.
type groItem struct {
	head, tail int // indices in the batch; next links head to tail
	n          int // packets merged
	tcp        bool
	open       bool   // TCP data run that may still grow
	iphLen     int    // IP header length
	hdrLen     int    // IP + TCP header length
	segSize    int    // payload of the head; later segments are at most this
	payload    int    // payload bytes in the run
	nextSeq    uint32 // sequence number the next segment must have
	psum       uint16 // one's complement sum of the run's payload
	pseudo     uint16 // addresses and protocol part of the pseudo-header
	psumOK     bool   // psum is set (computed once the run has two)
}

// coalescer holds one Write call's GRO state.
type coalescer struct {
	items []groItem
	next  []int // next[i]: the packet after i in its item, or -1
}

var coalescerPool = sync.Pool{New: func() any { return new(coalescer) }}

// tcpSeg is what parseTCP learns of a packet.
type tcpSeg struct {
	v6      bool
	iphLen  int
	hdrLen  int
	seq     uint32
	flags   uint8
	payload int
}

// parseTCP reports whether p is a TCP segment the coalescer could merge:
// an unfragmented IPv4 packet without options or an IPv6 packet without
// extension headers, whose length fields match len(p), carrying payload,
// with only ACK (and maybe PSH) set.
func parseTCP(p []byte) (tcpSeg, bool) {
	var s tcpSeg
	if len(p) < header.IPv4MinimumSize {
		return s, false
	}
	switch p[0] >> 4 {
	case 4:
		if p[0]&0xf != 5 || int(binary.BigEndian.Uint16(p[2:])) != len(p) ||
			binary.BigEndian.Uint16(p[6:])&0x3fff != 0 || // MF or fragment offset
			p[9] != uint8(header.TCPProtocolNumber) {
			return s, false
		}
		s.iphLen = header.IPv4MinimumSize
	case 6:
		if len(p) < header.IPv6MinimumSize || int(binary.BigEndian.Uint16(p[4:]))+header.IPv6MinimumSize != len(p) ||
			p[6] != uint8(header.TCPProtocolNumber) {
			return s, false
		}
		s.v6 = true
		s.iphLen = header.IPv6MinimumSize
	default:
		return s, false
	}
	if len(p) < s.iphLen+header.TCPMinimumSize {
		return s, false
	}
	t := p[s.iphLen:]
	tcphLen := int(t[12]>>4) * 4
	if tcphLen < header.TCPMinimumSize || len(t) < tcphLen || t[12]&0x0f != 0 {
		return s, false
	}
	s.hdrLen = s.iphLen + tcphLen
	s.payload = len(p) - s.hdrLen
	s.seq = binary.BigEndian.Uint32(t[4:])
	s.flags = t[13]
	const ack = 0x10
	if s.payload == 0 || s.flags&^(ack|tcpPSH) != 0 || s.flags&ack == 0 {
		return s, false
	}
	return s, true
}

// sameFlow reports whether p and q (both accepted by flowOf, of one IP
// version, with IP header lengths pl and ql) are of one flow: addresses
// and ports.
func sameFlow(p, q []byte, v6 bool, pl, ql int) bool {
	if v6 {
		return string(p[8:40]) == string(q[8:40]) && string(p[pl:pl+4]) == string(q[ql:ql+4])
	}
	return string(p[12:20]) == string(q[12:20]) && string(p[pl:pl+4]) == string(q[ql:ql+4])
}

// flowOf reports whether p is a TCP packet whose flow (addresses and
// ports) can be read, and returns its version and IP header length; a
// packet's flow is found even when the packet itself cannot merge (a FIN,
// a pure ACK). barrier reports a packet that may carry some TCP flow's
// bytes where its ports cannot be read (an IPv4 fragment of TCP, an IPv6
// packet with extension headers): no run may grow past it.
func flowOf(p []byte) (v6 bool, iphLen int, ok, barrier bool) {
	if len(p) < header.IPv4MinimumSize {
		return false, 0, false, false
	}
	switch p[0] >> 4 {
	case 4:
		if p[9] != uint8(header.TCPProtocolNumber) {
			return false, 0, false, false
		}
		iphLen = int(p[0]&0xf) * 4
		if iphLen < header.IPv4MinimumSize || len(p) < iphLen+4 || binary.BigEndian.Uint16(p[6:])&0x3fff != 0 {
			return false, 0, false, true
		}
		return false, iphLen, true, false
	case 6:
		if len(p) < header.IPv6MinimumSize {
			return false, 0, false, false
		}
		switch p[6] {
		case uint8(header.TCPProtocolNumber):
			if len(p) < header.IPv6MinimumSize+4 {
				return false, 0, false, true
			}
			return true, header.IPv6MinimumSize, true, false
		case uint8(header.UDPProtocolNumber), uint8(header.ICMPv6ProtocolNumber):
			return false, 0, false, false
		}
		return false, 0, false, true
	}
	return false, 0, false, false
}

// canMerge reports whether segment q (parsed as s) extends item it, whose
// head is packet h: same IP header fields but lengths, IDs and checksum,
// same TCP header but sequence number, PSH and checksum, the next
// sequence number, no larger than the head's payload, and the run still
// open.
func canMerge(it *groItem, h, q []byte, s tcpSeg) bool {
	if !it.open || s.hdrLen != it.hdrLen || s.iphLen != it.iphLen || s.seq != it.nextSeq ||
		s.payload > it.segSize || it.hdrLen+it.payload+s.payload > groMaxPacket {
		return false
	}
	if s.v6 {
		// Version, traffic class, flow label; next header, hop limit.
		if string(h[0:4]) != string(q[0:4]) || string(h[6:8]) != string(q[6:8]) {
			return false
		}
	} else {
		// TOS; DF; TTL and protocol.
		if h[1] != q[1] || h[6] != q[6] || string(h[8:10]) != string(q[8:10]) {
			return false
		}
	}
	th, tq := h[it.iphLen:it.hdrLen], q[it.iphLen:it.hdrLen]
	// Ports (the flow), ack number, data offset, window, urgent pointer,
	// options.
	return string(th[0:4]) == string(tq[0:4]) && string(th[8:13]) == string(tq[8:13]) &&
		string(th[14:16]) == string(tq[14:16]) && string(th[18:]) == string(tq[18:])
}

// segSum returns the one's complement sum of p's TCP payload, derived
// from its checksum: the checksum makes pseudo-header + TCP header +
// payload sum to zero, so the payload sums to minus the rest.
func segSum(p []byte, s tcpSeg, pseudo uint16) uint16 {
	tcpLen := len(p) - s.iphLen
	rest := checksum.Checksum(p[s.iphLen:s.hdrLen], checksum.Combine(pseudo, uint16(tcpLen)))
	return ^rest
}

// pseudoAddrs is the pseudo-header's sum without its length: addresses and
// protocol.
func pseudoAddrs(p []byte, v6 bool) uint16 {
	var s uint16
	if v6 {
		s = checksum.Checksum(p[8:40], 0)
	} else {
		s = checksum.Checksum(p[12:20], 0)
	}
	return checksum.Combine(s, uint16(header.TCPProtocolNumber))
}

// coalesce groups bufs[i][offset:] into items, in the order of each
// item's first packet; a packet joins the latest item of its flow when it
// extends that item's run, and starts a new item otherwise. So packets of
// one flow keep their order, and a flow's bytes are the same stream.
func (c *coalescer) coalesce(bufs [][]byte, offset int) {
	c.items = c.items[:0]
	if cap(c.next) < len(bufs) {
		c.next = make([]int, len(bufs))
	}
	c.next = c.next[:len(bufs)]
	for i, b := range bufs {
		c.next[i] = -1
		p := b[offset:]
		v6, iphLen, isTCP, barrier := flowOf(p)
		if barrier {
			for j := range c.items {
				c.items[j].open = false
			}
		}
		if isTCP {
			// The latest item of p's flow, if one is near.
			for j := len(c.items) - 1; j >= 0 && j >= len(c.items)-groScan; j-- {
				it := &c.items[j]
				if !it.tcp {
					continue
				}
				h := bufs[it.head][offset:]
				hv6, hiph, _, _ := flowOf(h)
				if hv6 != v6 || !sameFlow(h, p, v6, hiph, iphLen) {
					continue
				}
				if s, ok := parseTCP(p); ok && canMerge(it, h, p, s) {
					c.merge(it, bufs, offset, i, s)
					goto next
				}
				it.open = false // p goes after it: it must not grow past p
				break
			}
		}
		c.items = append(c.items, groItem{head: i, tail: i, n: 1, tcp: isTCP})
		if isTCP {
			if s, ok := parseTCP(p); ok {
				it := &c.items[len(c.items)-1]
				it.open = s.flags&tcpPSH == 0
				it.iphLen, it.hdrLen = s.iphLen, s.hdrLen
				it.segSize, it.payload = s.payload, s.payload
				it.nextSeq = s.seq + uint32(s.payload)
			}
		}
	next:
	}
}

// merge appends packet i (segment s) to item it.
func (c *coalescer) merge(it *groItem, bufs [][]byte, offset, i int, s tcpSeg) {
	h := bufs[it.head][offset:]
	if !it.psumOK {
		hs, _ := parseTCP(h)
		it.pseudo = pseudoAddrs(h, hs.v6)
		it.psum = segSum(h, hs, it.pseudo)
		it.psumOK = true
	}
	ps := segSum(bufs[i][offset:], s, it.pseudo)
	if it.payload&1 != 0 { // at an odd offset: its sum is byte-swapped
		ps = bits.ReverseBytes16(ps)
	}
	it.psum = checksum.Combine(it.psum, ps)
	c.next[it.tail] = i
	it.tail = i
	it.n++
	it.payload += s.payload
	it.nextSeq += uint32(s.payload)
	if s.payload < it.segSize || s.flags&tcpPSH != 0 {
		it.open = false
	}
}

// build writes item it's merged packet (it.n > 1) into v, which has room
// for it.hdrLen+it.payload bytes: the head's headers with lengths,
// flags and checksums fixed, then every segment's payload in order.
func (c *coalescer) build(it *groItem, bufs [][]byte, offset int, v *buffer.View) {
	h := bufs[it.head][offset:]
	total := it.hdrLen + it.payload
	v.Write(h[:it.hdrLen])
	for i := it.head; i >= 0; i = c.next[i] {
		v.Write(bufs[i][offset+it.hdrLen:])
	}
	out := v.AsSlice()[:total]
	if out[0]>>4 == 6 {
		binary.BigEndian.PutUint16(out[4:], uint16(total-header.IPv6MinimumSize))
	} else {
		ip := header.IPv4(out)
		ip.SetTotalLength(uint16(total))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	t := out[it.iphLen:]
	// PSH as the last segment has it (only the last may).
	t[13] = t[13]&^tcpPSH | bufs[it.tail][offset+it.iphLen+13]&tcpPSH
	t[16], t[17] = 0, 0
	sum := checksum.Checksum(t[:it.hdrLen-it.iphLen], checksum.Combine(it.pseudo, uint16(len(t))))
	sum = checksum.Combine(sum, it.psum)
	binary.BigEndian.PutUint16(t[16:], ^sum)
}
