package netstack

import (
	"net/netip"
	"runtime"
	"testing"

	"github.com/sshmesh/sshmesh/meshkey"
)

// BenchmarkPeerMemory reports the heap a node keeps per peer (live bytes
// after a collection, over those of a node with no peers) with 100,000
// peers as a large mesh has them: a key and one /32 each, no endpoint
// (dormant), from a parsed wg-quick file. The figure is the point, not
// the time.
func BenchmarkPeerMemory(b *testing.B) {
	const nPeers = 100_000
	data := scaleFile(b, nPeers)
	live := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for b.Loop() {
		cfg, _, err := ParseConfigBytes(data, "scale.conf")
		if err != nil {
			b.Fatal(err)
		}
		cfg.BindAddress, cfg.ListenPort = netip.MustParseAddr("127.0.0.1"), 0
		empty := cfg
		empty.Peers = nil
		e, err := New(empty)
		if err != nil {
			b.Fatal(err)
		}
		before := live()
		n, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		cfg = Config{}
		after := live()
		b.ReportMetric(float64(after-before)/nPeers, "B/peer")
		runtime.KeepAlive(e)
		n.Close()
		e.Close()
	}
}

// scaleFile returns a wg-quick file of n peers, as bench/scalegen writes
// them (keys made cheaply: any 32 bytes but zero are a key here).
func scaleFile(tb testing.TB, n int) []byte {
	tb.Helper()
	priv := mustKey(tb)
	buf := []byte("[Interface]\nPrivateKey = " + priv.Base64() + "\nAddress = 100.64.0.1/32\n")
	for i := range n {
		var k meshkey.Public
		k[0], k[1], k[2], k[31] = byte(i), byte(i>>8), byte(i>>16), 1
		a := netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
		buf = append(buf, "\n[Peer]\nPublicKey = "+k.String()+"\nAllowedIPs = "+a.String()+"/32\n"...)
	}
	return buf
}
