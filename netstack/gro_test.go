package netstack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

const tcpACK = 0x10

// tcpPkt builds a TCP segment with valid checksums.
func tcpPkt(src, dst netip.Addr, sport, dport uint16, seq, ack uint32, flags uint8, win uint16, opts, payload []byte) []byte {
	iph := header.IPv4MinimumSize
	if src.Is6() {
		iph = header.IPv6MinimumSize
	}
	tcph := header.TCPMinimumSize + len(opts)
	p := make([]byte, iph+tcph+len(payload))
	if src.Is6() {
		p[0] = 6 << 4
		binary.BigEndian.PutUint16(p[4:], uint16(tcph+len(payload)))
		p[6], p[7] = 6, 64
		s, d := src.As16(), dst.As16()
		copy(p[8:], s[:])
		copy(p[24:], d[:])
	} else {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[6] = 0x40 // DF
		p[8], p[9] = 64, 6
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		ip := header.IPv4(p)
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	t := p[iph:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = uint8(tcph/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], win)
	copy(t[20:], opts)
	copy(t[tcph:], payload)
	setTCPChecksum(p)
	return p
}

func setTCPChecksum(p []byte) {
	v6 := p[0]>>4 == 6
	iph := header.IPv6MinimumSize
	if !v6 {
		iph = int(p[0]&0xf) * 4
	}
	t := p[iph:]
	t[16], t[17] = 0, 0
	sum := checksum.Combine(pseudoAddrs(p, v6), uint16(len(t)))
	binary.BigEndian.PutUint16(t[16:], ^checksum.Checksum(t, sum))
}

// checksumsOK reports whether p's IPv4 header checksum and TCP checksum
// are valid (true for packets that are not well-formed TCP).
func checksumsOK(p []byte) bool {
	v6, iph, ok, _ := flowOf(p)
	if !ok {
		return true
	}
	if !v6 && !header.IPv4(p).IsChecksumValid() {
		return false
	}
	t := p[iph:]
	if len(t) < header.TCPMinimumSize {
		return true
	}
	sum := checksum.Combine(pseudoAddrs(p, v6), uint16(len(t)))
	return checksum.Checksum(t, sum) == 0xffff
}

// runGRO coalesces bufs and returns the packets the link would deliver.
func runGRO(t testing.TB, bufs [][]byte) [][]byte {
	const off = 16
	in := make([][]byte, len(bufs))
	for i, b := range bufs {
		in[i] = append(make([]byte, off), b...)
	}
	var c coalescer
	c.coalesce(in, off)
	var out [][]byte
	n := 0
	for k := range c.items {
		it := &c.items[k]
		n += it.n
		if it.n == 1 {
			out = append(out, slices.Clone(in[it.head][off:]))
			continue
		}
		v := buffer.NewView(it.hdrLen + it.payload)
		c.build(it, in, off, v)
		out = append(out, slices.Clone(v.AsSlice()))
		v.Release()
	}
	if n != len(bufs) {
		t.Fatalf("items hold %d packets, the batch %d", n, len(bufs))
	}
	return out
}

// flowView is what a receiver's TCP can tell of a batch: per flow (IP
// version, addresses, ports), every payload byte with its sequence number
// and the header fields that go with it, and every other packet (control
// segments, non-TCP) whole, in order.
type flowRec struct {
	seq  uint32
	b    byte
	what string // the header fields that go with the byte; or "PSH", or a whole packet
}

func flowView(pkts [][]byte) map[string][]flowRec {
	m := map[string][]flowRec{}
	for _, p := range pkts {
		v6, iph, ok, _ := flowOf(p)
		if !ok {
			m["other"] = append(m["other"], flowRec{what: string(p)})
			continue
		}
		key := "4" + string(p[12:20]) + string(p[iph:iph+4])
		if v6 {
			key = "6" + string(p[8:40]) + string(p[iph:iph+4])
		}
		s, data := parseTCP(p)
		if !data {
			m[key] = append(m[key], flowRec{what: "ctl:" + string(p)})
			continue
		}
		t := p[iph:s.hdrLen]
		var sig string
		if v6 {
			sig = string(p[0:4]) + string(p[6:8])
		} else {
			sig = string(p[1:2]) + string(p[6:7]) + string(p[8:10])
		}
		sig += string(t[8:13]) + string(t[14:16]) + string(t[18:])
		for j := range s.payload {
			m[key] = append(m[key], flowRec{s.seq + uint32(j), p[s.hdrLen+j], sig})
		}
		if s.flags&tcpPSH != 0 {
			m[key] = append(m[key], flowRec{what: "PSH"})
		}
	}
	return m
}

// checkGRO runs the coalescer on bufs and checks that its output means the
// same to a receiver, is well-formed, and keeps valid checksums valid.
func checkGRO(t testing.TB, bufs [][]byte) [][]byte {
	t.Helper()
	out := runGRO(t, bufs)
	want, got := flowView(bufs), flowView(out)
	if len(want) != len(got) {
		t.Fatalf("flows: got %d, want %d", len(got), len(want))
	}
	for k, w := range want {
		if !slices.Equal(w, got[k]) {
			t.Fatalf("flow %x: got %d records, want %d; first difference at %d", k, len(got[k]), len(w), firstDiff(w, got[k]))
		}
	}
	allOK := true
	for _, b := range bufs {
		allOK = allOK && checksumsOK(b)
	}
	for i, p := range out {
		if len(p) > groMaxPacket {
			t.Fatalf("packet %d: %d bytes", i, len(p))
		}
		if allOK && !checksumsOK(p) {
			t.Fatalf("packet %d: bad checksum after merging packets with good ones", i)
		}
	}
	return out
}

func firstDiff(a, b []flowRec) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

var (
	groA  = netip.MustParseAddr("100.64.0.2")
	groB  = netip.MustParseAddr("100.64.0.1")
	groC  = netip.MustParseAddr("100.64.0.3")
	groA6 = netip.MustParseAddr("fd7a::2")
	groB6 = netip.MustParseAddr("fd7a::1")
)

var groTS = []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}

func seqRun(src, dst netip.Addr, seq uint32, n, size int, lastPSH bool) [][]byte {
	var out [][]byte
	for i := range n {
		f := uint8(tcpACK)
		if lastPSH && i == n-1 {
			f |= tcpPSH
		}
		pl := bytes.Repeat([]byte{byte(i + 1)}, size)
		out = append(out, tcpPkt(src, dst, 40000, 22, seq+uint32(i*size), 7, f, 512, groTS, pl))
	}
	return out
}

func TestGROMergesARun(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		src, dst := groA, groB
		if v6 {
			src, dst = groA6, groB6
		}
		in := seqRun(src, dst, 1000, 20, 1368, true)
		out := checkGRO(t, in)
		if len(out) != 1 {
			t.Fatalf("v6=%v: %d packets out of 20, want 1", v6, len(out))
		}
		if !checksumsOK(out[0]) {
			t.Fatal("bad checksum")
		}
	}
}

func TestGROSizeLimit(t *testing.T) {
	in := seqRun(groA, groB, 1, 100, 1400, false)
	out := checkGRO(t, in)
	if len(out) != 3 { // 46 + 46 + 8 segments of 1400 bytes
		t.Fatalf("%d packets, want 3", len(out))
	}
}

// TestGRONeverMergesTwoSources: segments of two source addresses (two
// peers: an address belongs to one peer) with the same ports and
// sequence numbers that would continue each other never merge.
func TestGRONeverMergesTwoSources(t *testing.T) {
	a := seqRun(groA, groB, 1000, 6, 1000, false)
	c := seqRun(groC, groB, 1000, 6, 1000, false)
	var in [][]byte
	for i := range a {
		if i%2 == 0 {
			in = append(in, a[i], c[i+1])
		} else {
			in = append(in, c[i-1], a[i])
		}
	}
	checkGRO(t, in) // each source's bytes stay in its own flow

	// c's segment continues a's sequence exactly: still two packets.
	in = [][]byte{a[0], seqRun(groC, groB, 2000, 1, 1000, false)[0]}
	if out := checkGRO(t, in); len(out) != 2 {
		t.Fatalf("segments of two sources merged: %d packets", len(out))
	}
}

func TestGROOrderAndGaps(t *testing.T) {
	r := seqRun(groA, groB, 0, 8, 1000, false)
	ack := tcpPkt(groA, groB, 40000, 22, 3000, 7, tcpACK, 512, groTS, nil)
	fin := tcpPkt(groA, groB, 40000, 22, 8000, 7, tcpACK|tcpFIN, 512, groTS, nil)
	in := [][]byte{r[0], r[1], r[3], r[2], ack, r[4], r[5], {0x45, 0, 0}, r[6], r[7], fin}
	out := checkGRO(t, in)
	if len(out) >= len(in) {
		t.Fatalf("nothing merged: %d packets", len(out))
	}
}

// FuzzGRO feeds the coalescer batches built from a script of segments of
// three flows (two IPv4 flows that differ only in source address, one
// IPv6 flow): runs, gaps, repeats, PSH, option changes, control segments,
// corrupted and foreign packets. The output must be the same byte stream
// per flow, with valid checksums when the input had them.
func FuzzGRO(f *testing.F) {
	f.Add([]byte{0, 0, 10, 0, 0, 10, 0, 0, 10, 1, 0, 10})
	f.Add([]byte{0, 0, 200, 0, 0, 200, 0, 0, 100, 0, 1, 200, 0, 2, 200, 0, 0, 200})
	f.Add([]byte{0, 0, 50, 2, 0, 0, 0, 0, 50, 3, 0, 0, 0, 0, 50, 4, 1, 0})
	f.Add([]byte{0, 0, 50, 0, 0, 50, 5, 3, 9, 0, 0, 50, 6, 0, 0, 0, 0, 50})
	f.Add([]byte{0, 2, 255, 0, 2, 255, 0, 2, 255, 0, 2, 255, 7, 2, 0, 0, 2, 255})
	f.Add([]byte{0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255,
		0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 255})
	f.Fuzz(func(t *testing.T, script []byte) {
		type flow struct {
			src, dst netip.Addr
			seq      uint32
			ts       byte
		}
		flows := []*flow{{src: groA, dst: groB}, {src: groC, dst: groB}, {src: groA6, dst: groB6}}
		var in [][]byte
		for i := 0; i+2 < len(script) && len(in) < 128; i += 3 {
			op, fl, arg := script[i]%8, flows[int(script[i+1])%3], int(script[i+2])
			opts := slices.Clone(groTS)
			opts[7] = fl.ts
			switch op {
			case 0, 1: // data; op 1 sets PSH
				size := 8*arg + int(script[i+1]>>2)%8
				if size == 0 {
					size = 1
				}
				flags := uint8(tcpACK)
				if op == 1 {
					flags |= tcpPSH
				}
				pl := make([]byte, size)
				for j := range pl {
					pl[j] = byte(j*7 + int(fl.seq))
				}
				in = append(in, tcpPkt(fl.src, fl.dst, 40000, 22, fl.seq, 7, flags, 512, opts, pl))
				fl.seq += uint32(size)
			case 2: // a gap, or a step back (a repeat)
				fl.seq += uint32(int8(arg)) * 100
			case 3: // a pure ACK, or a window update
				in = append(in, tcpPkt(fl.src, fl.dst, 40000, 22, fl.seq, 7, tcpACK, uint16(512+arg), opts, nil))
			case 4: // the timestamp moves on
				fl.ts++
			case 5: // corrupt a byte of the latest packet
				if len(in) > 0 && len(in[len(in)-1]) > 0 {
					p := in[len(in)-1]
					p[arg%len(p)] ^= script[i+1] | 1
				}
			case 6: // FIN, RST or SYN
				fv := []uint8{tcpACK | tcpFIN, 0x04, 0x02}[arg%3]
				in = append(in, tcpPkt(fl.src, fl.dst, 40000, 22, fl.seq, 7, fv, 512, opts, []byte{byte(arg)}))
			case 7: // a foreign packet: raw bytes
				in = append(in, slices.Clone(script[i:min(len(script), i+arg%64)]))
			}
		}
		checkGRO(t, in)
	})
}
