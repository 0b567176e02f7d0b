package netstack

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/sshmesh/sshmesh/meshkey"
)

// Conn is a TCP conn on the mesh that knows its peer: the WireGuard key
// whose session carries its packets. The node's listeners hand out only
// such conns, resolved from the source address at accept (a conn whose
// address no peer owns is closed there); [Node.Dial] returns one for the
// peer that owns the destination.
//
// The peer is fixed for the life of the conn. The node's stack takes a
// packet only from the peer that owns its source address (see
// [Node.PeerForAddr]), so if SetPeers gives the address to another key
// later, that key's packets do not reach this conn unnoticed:
// [Conn.PeerCurrent] turns false, and a server ends the conn.
type Conn struct {
	net.Conn
	peer   meshkey.Public
	remote netip.AddrPort
	node   *Node
}

// PeerKey returns the public key of the peer at the other end.
func (c *Conn) PeerKey() meshkey.Public { return c.peer }

// NodeKey returns the public key of the node the conn belongs to.
func (c *Conn) NodeKey() meshkey.Public { return c.node.pub }

// PeerCurrent reports whether the conn's remote address still belongs to
// its peer: false once the peer was removed, or its address moved to
// another peer, by SetPeers.
func (c *Conn) PeerCurrent() bool {
	k, ok := c.node.PeerForAddr(c.remote.Addr())
	return ok && k == c.peer
}

// PeerEndpoint returns the UDP address the node's WireGuard last heard the
// conn's peer from (zero if none). WireGuard follows a peer to where its
// latest packets come from, so it changes when the peer roams, and when
// another process with the same key (a second `sshmesh nc`, a proxy) talks
// to this node: the conn's packets then go to that process.
func (c *Conn) PeerEndpoint() netip.AddrPort {
	sts, err := c.node.PeerStatus()
	if err != nil {
		return netip.AddrPort{}
	}
	for _, st := range sts {
		if st.PublicKey == c.peer {
			return st.Endpoint
		}
	}
	return netip.AddrPort{}
}

// CloseWrite shuts down the writing side of the TCP conn (the peer reads
// EOF); the reading side stays open.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// CloseRead shuts down the reading side of the TCP conn.
func (c *Conn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return c.Conn.Close()
}

// NetConn returns the TCP conn underneath.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// WhoIs returns the peer that owns the mesh address of remoteAddr ("ip:port"
// or "ip", as net/http's Request.RemoteAddr and net.Conn's RemoteAddr give
// it): for a conn accepted on this node, the peer whose WireGuard session
// carried it. It answers for any protocol on the mesh (an HTTP server, a
// TCP proxy) without an SSH server. ok is false when no peer owns the
// address.
func (n *Node) WhoIs(remoteAddr string) (key meshkey.Public, ok bool) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	a := ap.Addr()
	if err != nil {
		if a, err = netip.ParseAddr(remoteAddr); err != nil {
			return meshkey.Public{}, false
		}
	}
	return n.PeerForAddr(a.Unmap())
}

// peerListener hands out the conns of a stack listener as *Conn, closing
// those whose source address no peer owns.
type peerListener struct {
	net.Listener
	n       *Node
	unknown atomic.Uint64
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if pc, ok := l.n.newConn(c, c.RemoteAddr()); ok {
			return pc, nil
		}
		l.unknown.Add(1)
		l.n.log.Warn("netstack: refused conn from an address no peer owns", "addr", c.RemoteAddr().String())
		c.Close()
	}
}

// NodeKey returns the public key of the node the listener belongs to.
func (l *peerListener) NodeKey() meshkey.Public { return l.n.pub }

// newConn returns c as a *Conn of the peer owning the address at, or false
// when no peer owns it.
func (n *Node) newConn(c net.Conn, at net.Addr) (*Conn, bool) {
	ta, ok := at.(*net.TCPAddr)
	if !ok {
		return nil, false
	}
	ap := ta.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	k, ok := n.PeerForAddr(ap.Addr())
	if !ok {
		return nil, false
	}
	return &Conn{Conn: c, peer: k, remote: ap, node: n}, true
}

// dialConn is Dial's conn as a *Conn of the peer owning its destination.
func (n *Node) dialConn(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	c, err := n.tnet.DialContextTCPAddrPort(ctx, ap)
	if err != nil {
		return nil, err
	}
	if pc, ok := n.newConn(c, c.RemoteAddr()); ok {
		return pc, nil
	}
	return c, nil
}

// NodeKey returns the public key of the node the listener belongs to.
func (l *trackedListener) NodeKey() meshkey.Public { return l.n.pub }

// A *Conn half-closes like the TCP conn it wraps.
var _ interface {
	CloseWrite() error
	CloseRead() error
} = (*Conn)(nil)
