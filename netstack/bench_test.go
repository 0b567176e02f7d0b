package netstack_test

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// BenchmarkMeshTCP measures bulk TCP throughput over the in-process mesh
// (two nodes in this process, real WireGuard over loopback UDP), over
// kernel loopback TCP, and (as root, with wireguard-go, wg and ip) over
// wireguard-go on kernel TUN devices between two network namespaces the
// benchmark makes, in the same run so that their ratios mean something on
// a busy machine.
//
// "up" writes from the dialing side to the listening side, "down" the
// other way; "x4" splits each op over four concurrent conns.
func BenchmarkMeshTCP(b *testing.B) {
	const chunk = 32 << 20 // bytes per op
	paths := []struct {
		name  string
		setup func(b *testing.B) (net.Listener, func() (net.Conn, error))
	}{
		{"mesh", func(b *testing.B) (net.Listener, func() (net.Conn, error)) {
			p := newPair(b)
			l, err := p.a.Listen("tcp", ":5001")
			if err != nil {
				b.Fatal(err)
			}
			return l, func() (net.Conn, error) {
				return p.b.Dial(testCtx(b, 10*time.Second), "tcp", "100.64.0.1:5001")
			}
		}},
		{"mesh-nogro", func(b *testing.B) (net.Listener, func() (net.Conn, error)) {
			p := newPairGRO(b, false)
			l, err := p.a.Listen("tcp", ":5001")
			if err != nil {
				b.Fatal(err)
			}
			return l, func() (net.Conn, error) {
				return p.b.Dial(testCtx(b, 10*time.Second), "tcp", "100.64.0.1:5001")
			}
		}},
		{"loopback", func(b *testing.B) (net.Listener, func() (net.Conn, error)) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			return l, func() (net.Conn, error) { return net.Dial("tcp", l.Addr().String()) }
		}},
		{"wggo-tun", wgTunnel},
	}
	for _, path := range paths {
		for _, dir := range []string{"up", "down"} {
			for _, streams := range []int{1, 4} {
				b.Run(fmt.Sprintf("%s/%s/x%d", path.name, dir, streams), func(b *testing.B) {
					l, dial := path.setup(b)
					benchBulk(b, l, dial, dir == "down", streams, chunk)
				})
			}
		}
	}
}

// benchBulk opens streams conns with dial and accepts them on l. Each op
// moves chunk bytes, split over the conns: from the dialed conns to the
// accepted ones, or the other way with down; the receiving end
// acknowledges its share of each op with one byte.
func benchBulk(b *testing.B, l net.Listener, dial func() (net.Conn, error), down bool, streams int, chunk int64) {
	defer l.Close()
	type pair struct{ send, recv net.Conn }
	pairs := make([]pair, streams)
	for i := range pairs {
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		s, err := l.Accept()
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		defer s.Close()
		if down {
			pairs[i] = pair{send: s, recv: c}
		} else {
			pairs[i] = pair{send: c, recv: s}
		}
	}
	share := chunk / int64(streams)
	for _, p := range pairs {
		go func() {
			buf := make([]byte, 256<<10)
			for {
				if _, err := io.CopyBuffer(io.Discard, io.LimitReader(p.recv, share), buf); err != nil {
					return
				}
				if _, err := p.recv.Write([]byte{1}); err != nil {
					return
				}
			}
		}()
	}
	bufs := make([][]byte, streams)
	for i := range bufs {
		bufs[i] = make([]byte, 256<<10)
	}
	b.SetBytes(share * int64(streams))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		errs := make([]error, streams)
		for i, p := range pairs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = sendShare(p.send, bufs[i], share)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// sendShare writes n bytes on c and waits for the one-byte acknowledgment.
func sendShare(c net.Conn, buf []byte, n int64) error {
	for sent := int64(0); sent < n; {
		k, err := c.Write(buf[:min(int64(len(buf)), n-sent)])
		if err != nil {
			return err
		}
		sent += int64(k)
	}
	var ack [1]byte
	_, err := io.ReadFull(c, ack[:])
	return err
}

// BenchmarkMeshRTT measures one round trip of a 48-byte write and its echo
// over the mesh: the pattern of an interactive session.
func BenchmarkMeshRTT(b *testing.B) {
	p := newPair(b)
	l, err := p.a.Listen("tcp", ":5002")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	c, err := p.b.Dial(testCtx(b, 10*time.Second), "tcp", "100.64.0.1:5002")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	go io.Copy(s, s)
	msg, buf := make([]byte, 48), make([]byte, 48)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}
