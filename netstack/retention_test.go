package netstack

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// These tests hold the data path to a memory contract: once the device's
// packets are handed on, the slices the device gave us keep none of its
// 64 KiB message buffers alive (see forgetBuffers and forgetStale).

// withStale returns the first n of bufs as a slice whose capacity reaches
// over all of bufs, as a peer's reused batch slice does after a larger
// batch.
func withStale(bufs [][]byte, n int) [][]byte {
	return bufs[:n:len(bufs)]
}

func TestWriteForgetsTheDevicesBuffers(t *testing.T) {
	const off = 16
	for _, tc := range []struct {
		name string
		gro  bool
		n    int // packets in the batch
		// onDevice refuses the source of every packet (they are all
		// dropped as foreign) when set.
		foreign bool
	}{
		{"one packet", true, 1, false},
		{"a run merged by GRO", true, 8, false},
		{"without GRO", false, 8, false},
		{"dropped as foreign", true, 8, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _, err := newStack([]netip.Addr{groB}, stackOptions{
				mtu: 1420, gro: tc.gro, ledger: newLedger(flightLimit, flightStall),
				onDevice: func(a netip.Addr) bool { return !tc.foreign || a != groA },
			})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			var all [][]byte
			for _, p := range seqRun(groA, groB, 1000, 12, 1368, true) {
				all = append(all, append(make([]byte, off), p...))
			}
			bufs := withStale(all, tc.n)
			if n, err := d.Write(bufs, off); err != nil || n != tc.n {
				t.Fatalf("Write = %d, %v; want %d, nil", n, err, tc.n)
			}
			for i, b := range bufs[:cap(bufs)] {
				if b != nil {
					t.Errorf("after Write, entry %d of the device's slice (len %d, cap %d) still holds its buffer", i, len(bufs), cap(bufs))
				}
			}
		})
	}
}

func TestSendForgetsTheDevicesBuffers(t *testing.T) {
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	inner := newAddrBind(netip.MustParseAddr("127.0.0.1"))
	b := &meteredBind{Bind: inner, g: newLedger(flightLimit, flightStall)}
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ep, err := inner.ParseEndpoint(sink.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	all := testBufs(8)
	bufs := withStale(all, 3)
	sent := slices.Clone(all) // the device's buffers, as Send gets them
	if err := b.Send(bufs, ep); err != nil {
		t.Fatal(err)
	}
	// The batch's entries keep their lengths (the device counts the
	// bytes it sent from them after Send) but no longer point into the
	// device's buffers.
	for i, e := range bufs {
		if len(e) != 64 {
			t.Errorf("entry %d of the batch: length %d after Send, want 64", i, len(e))
		}
		if &e[0] == &sent[i][0] {
			t.Errorf("after Send, entry %d of the batch still points into its buffer", i)
		}
	}
	for i, e := range bufs[len(bufs):cap(bufs)] {
		if e != nil {
			t.Errorf("after Send, stale entry %d past the batch still holds an earlier batch's buffer", len(bufs)+i)
		}
	}
	// The datagrams went out.
	_ = sink.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 128)
	for i := range 3 {
		if n, _, err := sink.ReadFromUDP(buf); err != nil || n != 64 {
			t.Fatalf("datagram %d: %d bytes, %v", i, n, err)
		}
	}
}

// TestBatchBuffersCeiling: the device keeps a 64 KiB message buffer per
// packet of a batch for each of its two readers (the socket's, the
// stack's), all of it resident once traffic has passed; the batch size
// both sides report bounds that to 2 MiB (see batchSize).
func TestBatchBuffersCeiling(t *testing.T) {
	const ceiling = 2 << 20
	d, _, err := newStack([]netip.Addr{groB}, stackOptions{mtu: 1420, ledger: newLedger(flightLimit, flightStall)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := newAddrBind(netip.Addr{})
	batch := max(d.BatchSize(), b.BatchSize()) // the device takes the larger
	if held := 2 * batch * device.MaxMessageSize; held > ceiling {
		t.Errorf("batch of %d packets: the device's readers hold %d KiB of buffers, over the %d KiB ceiling", batch, held>>10, ceiling>>10)
	}
}
