package netstack_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
)

var loopback = netip.MustParseAddr("127.0.0.1")

func newKey(t testing.TB) meshkey.Private {
	t.Helper()
	k, err := meshkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// newNode starts a node on 127.0.0.1 and closes it when the test ends.
func newNode(t testing.TB, cfg netstack.Config) *netstack.Node {
	t.Helper()
	if !cfg.BindAddress.IsValid() {
		cfg.BindAddress = loopback
	}
	n, err := netstack.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// endpointOf is where n's UDP socket listens.
func endpointOf(n *netstack.Node) netip.AddrPort {
	return netip.AddrPortFrom(loopback, n.ListenPort())
}

// testCtx is a context that ends a little before the test's deadline.
func testCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// acceptor accepts conns on l in the background and hands them out.
type acceptor struct {
	conns chan net.Conn
}

func acceptAll(t testing.TB, l net.Listener) *acceptor {
	t.Helper()
	a := &acceptor{conns: make(chan net.Conn, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			a.conns <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		close(a.conns)
		for c := range a.conns {
			c.Close()
		}
	})
	return a
}

func (a *acceptor) next(t testing.TB, d time.Duration) net.Conn {
	t.Helper()
	select {
	case c := <-a.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(d):
		t.Fatalf("no conn accepted within %v", d)
		return nil
	}
}
