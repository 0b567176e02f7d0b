package netstack

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
)

// Listen listens for TCP conns on the mesh. network is "tcp", "tcp4" or
// "tcp6"; address is "host:port" where host is one of the node's mesh
// addresses, or empty (":22") for all of them. Its conns are *[Conn]s
// that know their peer; a conn whose source address no peer owns is
// closed at accept (and logged). The listener has a NodeKey method (the
// node's public key), so a server can check that its policy names it.
func (n *Node) Listen(network, address string) (net.Listener, error) {
	ap, err := n.parseAddr("listen", network, address, true)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isClosed {
		return nil, ErrClosed
	}
	l, err := n.tnet.ListenTCPAddrPort(ap)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen %s %s: %w", network, address, err)
	}
	var inner net.Listener = l
	if !ap.Addr().IsValid() && network != "tcp" {
		inner = &familyListener{Listener: l, v4: network == "tcp4", log: n.log}
	}
	tl := &trackedListener{Listener: &peerListener{Listener: inner, n: n}, n: n}
	n.listeners[tl] = struct{}{}
	return tl, nil
}

// trackedListener is forgotten by its node when closed.
type trackedListener struct {
	net.Listener
	n    *Node
	once sync.Once
}

func (l *trackedListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() {
		l.n.mu.Lock()
		delete(l.n.listeners, l)
		l.n.mu.Unlock()
	})
	return err
}

// familyListener passes on only the conns of one address family: gVisor's
// wildcard listener takes both.
type familyListener struct {
	net.Listener
	v4  bool
	log *slog.Logger
}

func (l *familyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ta, ok := c.LocalAddr().(*net.TCPAddr); ok && (ta.IP.To4() != nil) == l.v4 {
			return c, nil
		}
		l.log.Debug("netstack: conn of the other address family refused", "addr", c.RemoteAddr().String())
		c.Close()
	}
}

// Dial opens a TCP conn over the mesh. network is "tcp", "tcp4" or "tcp6";
// address is "ip:port" (a mesh IP; host names are not resolved). The conn
// is a *[Conn] of the peer that owns the address.
func (n *Node) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := n.parseAddr("dial", network, address, false)
	if err != nil {
		return nil, err
	}
	select {
	case <-n.closed:
		return nil, ErrClosed
	default:
	}
	c, err := n.dialConn(ctx, ap)
	if err != nil {
		return nil, fmt.Errorf("netstack: dial %s %s: %w", network, address, err)
	}
	return c, nil
}

// parseAddr checks network and parses address for Listen or Dial.
func (n *Node) parseAddr(op, network, address string, wildcardOK bool) (netip.AddrPort, error) {
	fail := func(format string, args ...any) (netip.AddrPort, error) {
		return netip.AddrPort{}, fmt.Errorf("netstack: %s %s %s: %s", op, network, address, fmt.Sprintf(format, args...))
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fail("network must be tcp, tcp4 or tcp6")
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return fail("%v", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return fail("bad port %q", portStr)
	}
	var a netip.Addr
	if host != "" {
		a, err = netip.ParseAddr(host)
		if err != nil {
			return fail("%q is not an IP address (host names are not resolved on the mesh)", host)
		}
		a = a.Unmap()
		if (network == "tcp4" && !a.Is4()) || (network == "tcp6" && !a.Is6()) {
			return fail("address family does not match the network")
		}
	}
	if !a.IsValid() || a.IsUnspecified() {
		if !wildcardOK {
			return fail("need an IP address to dial")
		}
		// gVisor's wildcard is the empty address, for both families;
		// Listen filters by family for tcp4 and tcp6.
		a = netip.Addr{}
		if network != "tcp" && !n.hasFamily(network == "tcp4") {
			return fail("the node has no %s mesh address", network)
		}
	} else if !wildcardOK {
		if port == 0 {
			return fail("port 0")
		}
	} else if !slices.Contains(n.addrs, a) {
		return fail("%v is not one of the node's mesh addresses %v", a, n.addrs)
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
}

func (n *Node) hasFamily(v4 bool) bool {
	for _, a := range n.addrs {
		if a.Is4() == v4 {
			return true
		}
	}
	return false
}
