package netstack

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TCP flag bits, in the 14th byte of the header.
const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80
)

// gsoSplit writes the packets pkt stands for into bufs (each from offset
// on), starting at segment first, and sets their sizes. It returns how many
// it wrote and the index of the next segment, or -1 when pkt is done.
//
// A packet with TCP GSO options (gso.Type GSOTCPv4 or GSOTCPv6) carries up
// to 64 KiB of payload and only a pseudo-header checksum; it becomes
// packets of gso.MSS payload bytes each with the same headers, their
// sequence numbers, IP lengths and IDs adjusted, FIN and PSH on the last
// only, CWR on the first only, and full checksums (the peer may be a kernel
// WireGuard that does not check them). Any other packet is copied as it is.
// A malformed GSO packet is dropped: it comes from our own stack, so that
// is a bug, never input.
func gsoSplit(pkt []byte, gso stack.GSO, first int, bufs [][]byte, sizes []int, offset int) (int, int) {
	if len(bufs) == 0 {
		return 0, first
	}
	if gso.Type != stack.GSOTCPv4 && gso.Type != stack.GSOTCPv6 {
		sizes[0] = copy(bufs[0][offset:], pkt)
		if sizes[0] < len(pkt) {
			sizes[0] = 0 // too big for the device's buffer: drop
		}
		return 1, -1
	}
	if len(pkt) < 1 {
		return 0, -1
	}
	v6 := pkt[0]>>4 == 6
	var iphLen int
	if v6 {
		iphLen = header.IPv6MinimumSize
		if len(pkt) < iphLen || pkt[6] != uint8(header.TCPProtocolNumber) {
			return 0, -1
		}
	} else {
		iphLen = int(pkt[0]&0xf) * 4
		if iphLen < header.IPv4MinimumSize || len(pkt) < iphLen || pkt[9] != uint8(header.TCPProtocolNumber) {
			return 0, -1
		}
	}
	if len(pkt) < iphLen+header.TCPMinimumSize {
		return 0, -1
	}
	tcphLen := int(pkt[iphLen+12]>>4) * 4
	hdrLen := iphLen + tcphLen
	if tcphLen < header.TCPMinimumSize || len(pkt) < hdrLen {
		return 0, -1
	}
	payload := pkt[hdrLen:]
	mss := int(gso.MSS)
	if mss <= 0 || mss > len(payload) {
		mss = max(len(payload), 1)
	}
	nseg := max((len(payload)+mss-1)/mss, 1)
	seq := binary.BigEndian.Uint32(pkt[iphLen+4:])
	id := binary.BigEndian.Uint16(pkt[4:]) // IPv4 only
	flags := pkt[iphLen+13]

	// The pseudo-header without its length: addresses and protocol.
	var pseudo uint16
	if v6 {
		pseudo = checksum.Checksum(pkt[8:40], 0)
	} else {
		pseudo = checksum.Checksum(pkt[12:20], 0)
	}
	pseudo = checksum.Combine(pseudo, uint16(header.TCPProtocolNumber))

	k := 0
	i := first
	for ; i < nseg && k < len(bufs); i++ {
		start := i * mss
		end := min(start+mss, len(payload))
		seg := payload[start:end]
		out := bufs[k][offset:]
		if len(out) < hdrLen+len(seg) {
			sizes[k] = 0 // cannot happen with the device's 64 KiB buffers
			k++
			continue
		}
		out = out[:hdrLen+len(seg)]
		copy(out, pkt[:hdrLen])
		copy(out[hdrLen:], seg)

		if v6 {
			binary.BigEndian.PutUint16(out[4:], uint16(tcphLen+len(seg)))
		} else {
			ip := header.IPv4(out)
			ip.SetTotalLength(uint16(len(out)))
			ip.SetID(id + uint16(i))
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
		}
		tcp := out[iphLen:]
		binary.BigEndian.PutUint32(tcp[4:], seq+uint32(start))
		f := flags
		if i != nseg-1 {
			f &^= tcpFIN | tcpPSH
		}
		if i != 0 {
			f &^= tcpCWR
		}
		tcp[13] = f
		tcp[16], tcp[17] = 0, 0
		xsum := checksum.Combine(pseudo, uint16(len(tcp)))
		xsum = checksum.Checksum(tcp, xsum)
		binary.BigEndian.PutUint16(tcp[16:], ^xsum)
		sizes[k] = len(out)
		k++
	}
	if i == nseg {
		return k, -1
	}
	return k, i
}
