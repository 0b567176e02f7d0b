package netstack_test

import (
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkMeshTCP measures bulk TCP throughput from B to A over the
// in-process mesh (two nodes in this process, real WireGuard over loopback
// UDP), and over kernel loopback TCP for reference.
func BenchmarkMeshTCP(b *testing.B) {
	const chunk = 32 << 20 // bytes per op
	b.Run("mesh", func(b *testing.B) {
		p := newPair(b)
		l, err := p.a.Listen("tcp", ":5001")
		if err != nil {
			b.Fatal(err)
		}
		c, err := p.b.Dial(testCtx(b, 10*time.Second), "tcp", "100.64.0.1:5001")
		if err != nil {
			b.Fatal(err)
		}
		benchBulk(b, l, c, chunk)
	})
	b.Run("loopback", func(b *testing.B) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		benchBulk(b, l, c, chunk)
	})
}

// benchBulk writes chunk bytes per op on c; the conn l accepts reads them
// and acknowledges each op with one byte.
func benchBulk(b *testing.B, l net.Listener, c net.Conn, chunk int64) {
	defer l.Close()
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	go func() {
		buf := make([]byte, 256<<10)
		for {
			if _, err := io.CopyBuffer(io.Discard, io.LimitReader(s, chunk), buf); err != nil {
				return
			}
			if _, err := s.Write([]byte{1}); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 256<<10)
	ack := make([]byte, 1)
	b.SetBytes(chunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for sent := int64(0); sent < chunk; {
			n, err := c.Write(buf[:min(int64(len(buf)), chunk-sent)])
			if err != nil {
				b.Fatal(err)
			}
			sent += int64(n)
		}
		if _, err := io.ReadFull(c, ack); err != nil {
			b.Fatal(err)
		}
	}
}
