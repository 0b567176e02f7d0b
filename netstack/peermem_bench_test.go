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
// (dormant), from a parsed wg-quick file, less what a node without peers
// holds. The figure is the point, not the time; it moves by some tens of
// bytes from run to run (the device's buffer pools).
func BenchmarkPeerMemory(b *testing.B) {
	const nPeers = 100_000
	data := scaleFile(b, nPeers)
	live := func() uint64 {
		runtime.GC()
		runtime.GC() // sync.Pool keeps its items for one collection more
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for b.Loop() {
		empty := Config{PrivateKey: mustKey(b), Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}, BindAddress: netip.MustParseAddr("127.0.0.1")}
		start := live()
		e, err := New(empty) // what a node costs without peers
		if err != nil {
			b.Fatal(err)
		}
		fixed := live() - start
		cfg, _, err := ParseConfigBytes(data, "scale.conf")
		if err != nil {
			b.Fatal(err)
		}
		cfg.BindAddress, cfg.ListenPort = empty.BindAddress, 0
		n, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		cfg = Config{}
		held := live() - start - 2*fixed
		b.ReportMetric(float64(held)/nPeers, "B/peer")
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
