package netstack

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// tcpPacket builds an IP/TCP packet from src to dst with a timestamp
// option, as gVisor's TCP sends them. With partial set, the TCP checksum
// holds only the pseudo-header sum (what a GSO packet carries).
func tcpPacket(src, dst netip.AddrPort, seq uint32, flags header.TCPFlags, payload []byte, partial bool) []byte {
	const optLen = 12
	tcpLen := header.TCPMinimumSize + optLen + len(payload)
	var ipLen int
	if src.Addr().Is4() {
		ipLen = header.IPv4MinimumSize
	} else {
		ipLen = header.IPv6MinimumSize
	}
	b := make([]byte, ipLen+tcpLen)
	srcA, dstA := tcpip.AddrFromSlice(src.Addr().AsSlice()), tcpip.AddrFromSlice(dst.Addr().AsSlice())
	if src.Addr().Is4() {
		header.IPv4(b).Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)), ID: 7, Flags: header.IPv4FlagDontFragment,
			TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: srcA, DstAddr: dstA,
		})
		header.IPv4(b).SetChecksum(^header.IPv4(b).CalculateChecksum())
	} else {
		header.IPv6(b).Encode(&header.IPv6Fields{
			PayloadLength: uint16(tcpLen), TransportProtocol: header.TCPProtocolNumber,
			HopLimit: 64, SrcAddr: srcA, DstAddr: dstA,
		})
	}
	tcp := header.TCP(b[ipLen:])
	tcp.Encode(&header.TCPFields{
		SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: 99,
		DataOffset: header.TCPMinimumSize + optLen, Flags: flags, WindowSize: 1000,
	})
	opts := tcp[header.TCPMinimumSize:]
	opts[0], opts[1] = 1, 1
	header.EncodeTSOption(123, 456, opts[2:])
	copy(tcp[header.TCPMinimumSize+optLen:], payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, srcA, dstA, uint16(tcpLen))
	if partial {
		tcp.SetChecksum(xsum)
	} else {
		tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
	}
	return b
}

// checkPacket checks that p is a well-formed IP/TCP packet with valid
// checksums and returns its TCP header and payload.
func checkPacket(t *testing.T, p []byte) (header.TCP, []byte) {
	t.Helper()
	var src, dst tcpip.Address
	var tcp header.TCP
	if p[0]>>4 == 4 {
		ip := header.IPv4(p)
		if !ip.IsValid(len(p)) || int(ip.TotalLength()) != len(p) {
			t.Fatalf("bad IPv4 header or length %d != %d", ip.TotalLength(), len(p))
		}
		if !ip.IsChecksumValid() {
			t.Fatal("bad IPv4 header checksum")
		}
		src, dst, tcp = ip.SourceAddress(), ip.DestinationAddress(), header.TCP(ip.Payload())
	} else {
		ip := header.IPv6(p)
		if !ip.IsValid(len(p)) || int(ip.PayloadLength())+header.IPv6MinimumSize != len(p) {
			t.Fatalf("bad IPv6 header or length")
		}
		src, dst, tcp = ip.SourceAddress(), ip.DestinationAddress(), header.TCP(ip.Payload())
	}
	payload := tcp[tcp.DataOffset():]
	if !tcp.IsChecksumValid(src, dst, checksum.Checksum(payload, 0), uint16(len(payload))) {
		t.Fatal("bad TCP checksum")
	}
	return tcp, payload
}

func TestGSOSplit(t *testing.T) {
	v4src, v4dst := netip.MustParseAddrPort("100.64.0.2:40000"), netip.MustParseAddrPort("100.64.0.1:22")
	v6src, v6dst := netip.MustParseAddrPort("[fd7a::2]:40000"), netip.MustParseAddrPort("[fd7a::1]:22")
	for _, tc := range []struct {
		v6         bool
		size, mss  int
		flags      header.TCPFlags
		batch      int // len(bufs) per call
		wantFrames int
	}{
		{false, 65000, 1368, header.TCPFlagAck | header.TCPFlagPsh, 128, 48},
		{true, 65000, 1348, header.TCPFlagAck | header.TCPFlagPsh | header.TCPFlagFin, 7, 49},
		{false, 1368, 1368, header.TCPFlagAck, 128, 1},
		{false, 0, 1368, header.TCPFlagAck, 1, 1},
		{true, 3001, 1000, header.TCPFlagAck | header.TCPFlagCwr | header.TCPFlagPsh, 2, 4},
		{false, 4000, 536, header.TCPFlagAck | header.TCPFlagPsh, 3, 8},
	} {
		t.Run(fmt.Sprintf("v6=%v size=%d mss=%d batch=%d", tc.v6, tc.size, tc.mss, tc.batch), func(t *testing.T) {
			src, dst, typ := v4src, v4dst, stack.GSOTCPv4
			if tc.v6 {
				src, dst, typ = v6src, v6dst, stack.GSOTCPv6
			}
			payload := make([]byte, tc.size)
			for i := range payload {
				payload[i] = byte(rand.Uint32())
			}
			const seq = 0xfffff000 // wraps
			pkt := tcpPacket(src, dst, seq, tc.flags, payload, true)
			orig := bytes.Clone(pkt)
			gso := stack.GSO{Type: typ, NeedsCsum: true, MSS: uint16(tc.mss)}

			const offset = 16
			var got []byte
			frames, next := 0, 0
			for next >= 0 {
				bufs := make([][]byte, tc.batch)
				for i := range bufs {
					bufs[i] = make([]byte, 65536)
				}
				sizes := make([]int, tc.batch)
				var k int
				k, next = gsoSplit(pkt, gso, next, bufs, sizes, offset)
				if k == 0 || (next >= 0 && k != tc.batch) {
					t.Fatalf("gsoSplit wrote %d of %d bufs, next %d", k, tc.batch, next)
				}
				for i := range k {
					p := bufs[i][offset : offset+sizes[i]]
					tcp, pl := checkPacket(t, p)
					if len(pl) > tc.mss {
						t.Errorf("frame %d: payload %d > mss %d", frames, len(pl), tc.mss)
					}
					if want := uint32(seq + len(got)); tcp.SequenceNumber() != want {
						t.Errorf("frame %d: seq %d, want %d", frames, tcp.SequenceNumber(), want)
					}
					f := tcp.Flags()
					last := len(got)+len(pl) == tc.size
					for _, c := range []struct {
						flag header.TCPFlags
						want bool
					}{
						{header.TCPFlagFin, last && tc.flags&header.TCPFlagFin != 0},
						{header.TCPFlagPsh, last && tc.flags&header.TCPFlagPsh != 0},
						{header.TCPFlagCwr, frames == 0 && tc.flags&header.TCPFlagCwr != 0},
						{header.TCPFlagAck, true},
					} {
						if (f&c.flag != 0) != c.want {
							t.Errorf("frame %d: flag %v set = %v, want %v", frames, c.flag, f&c.flag != 0, c.want)
						}
					}
					if !tc.v6 {
						if id := header.IPv4(p).ID(); id != uint16(7+frames) {
							t.Errorf("frame %d: IPv4 ID %d, want %d", frames, id, 7+frames)
						}
					}
					got = append(got, pl...)
					frames++
				}
			}
			if frames != tc.wantFrames {
				t.Errorf("%d frames, want %d", frames, tc.wantFrames)
			}
			if !bytes.Equal(got, payload) {
				t.Error("payload differs after splitting")
			}
			if !bytes.Equal(pkt, orig) {
				t.Error("gsoSplit modified its input")
			}
		})
	}
}

func TestGSOSplitPassThrough(t *testing.T) {
	pkt := tcpPacket(netip.MustParseAddrPort("100.64.0.2:1"), netip.MustParseAddrPort("100.64.0.1:2"), 1, header.TCPFlagAck, []byte("hello"), false)
	bufs, sizes := [][]byte{make([]byte, 100)}, []int{0}
	k, next := gsoSplit(pkt, stack.GSO{}, 0, bufs, sizes, 10)
	if k != 1 || next != -1 || !bytes.Equal(bufs[0][10:10+sizes[0]], pkt) {
		t.Fatalf("non-GSO packet: k=%d next=%d, copied %x", k, next, bufs[0][10:10+sizes[0]])
	}
	// A GSO packet that is not TCP is dropped, not sent malformed.
	bad := bytes.Clone(pkt)
	bad[9] = 17
	if k, next := gsoSplit(bad, stack.GSO{Type: stack.GSOTCPv4, MSS: 1000}, 0, bufs, sizes, 0); k != 0 || next != -1 {
		t.Fatalf("malformed GSO packet: k=%d next=%d, want dropped", k, next)
	}
}

// FuzzGSOSplit feeds arbitrary packets as GSO packets: gsoSplit must not
// panic, and every segment of a well-formed TCP packet must check out.
func FuzzGSOSplit(f *testing.F) {
	f.Add(tcpPacket(netip.MustParseAddrPort("100.64.0.2:1"), netip.MustParseAddrPort("100.64.0.1:2"), 5, header.TCPFlagAck|header.TCPFlagPsh, make([]byte, 3000), true), uint16(1000), false)
	f.Add(tcpPacket(netip.MustParseAddrPort("[fd7a::2]:1"), netip.MustParseAddrPort("[fd7a::1]:2"), 5, header.TCPFlagAck, make([]byte, 100), true), uint16(30), true)
	f.Fuzz(func(t *testing.T, pkt []byte, mss uint16, v6 bool) {
		typ := stack.GSOTCPv4
		if v6 {
			typ = stack.GSOTCPv6
		}
		bufs := make([][]byte, 8)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		sizes := make([]int, len(bufs))
		next := 0
		for range 1000 {
			var k int
			k, next = gsoSplit(pkt, stack.GSO{Type: typ, MSS: mss}, next, bufs, sizes, 4)
			for i := range k {
				if sizes[i] > len(bufs[i])-4 {
					t.Fatalf("size %d beyond the buffer", sizes[i])
				}
			}
			if next < 0 {
				return
			}
		}
	})
}
