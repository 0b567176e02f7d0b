package sshmesh

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

// PeerResolver maps a mesh address to the WireGuard peer that owns it, with
// WireGuard's allowed-IPs meaning. A *netstack.Node is one. A resolver that
// also has a PublicKey() meshkey.Public method (a node does) names the node
// itself: a [Listener] then gives its conns [Peer.Self] and a NodeKey.
type PeerResolver interface {
	PeerForAddr(netip.Addr) (meshkey.Public, bool)
}

// PeerConn is a conn that knows who is at its other end, as the mesh proved
// it: the conns of a *netstack.Node's listener, and of a [Listener], are.
// [Server.Serve] serves only such conns.
type PeerConn interface {
	net.Conn
	// PeerKey is the caller's WireGuard public key.
	PeerKey() meshkey.Public
	// NodeKey is the public key of the node that accepted the conn (zero
	// when the listener does not know it).
	NodeKey() meshkey.Public
	// PeerCurrent reports whether the conn's remote address still belongs
	// to PeerKey (false once the peer was removed or its address moved).
	PeerCurrent() bool
}

// IdentityConn is a [PeerConn] whose transport has a coordinator that
// vouches for who is at each end: a tailnet (package
// github.com/sshmesh/sshmesh/tailnet), whose control server knows every
// node's name, user and tags. [Server.Serve] passes both identities to the
// policy (policy.Request.Caller and Server), so a policy document can name
// callers by login and tags instead of by key.
type IdentityConn interface {
	PeerConn
	// PeerIdentity is the caller as the coordinator vouched for it when the
	// conn was accepted (Key is PeerKey).
	PeerIdentity() policy.Identity
	// SelfIdentity is the node that accepted the conn, as the coordinator
	// vouched for it then.
	SelfIdentity() policy.Identity
}

// Peer is who is on the other end of a mesh conn, as WireGuard proved it:
// the caller (netstack.Peer, by contrast, is an entry of a node's peer
// set, as a wg-quick [Peer] section is).
type Peer struct {
	Key  meshkey.Public // the caller's WireGuard public key
	Addr netip.AddrPort // the caller's mesh address and port
	// Local is the mesh address and port the conn reached.
	Local netip.AddrPort
	// Self is the public key of the node that accepted the conn, when the
	// listener knows it; zero otherwise.
	Self meshkey.Public
	// Identity is the caller as the transport's coordinator vouches for it
	// (a tailnet's WhoIs: node name, login, tags), from an [IdentityConn];
	// nil on the file-based mesh, where the policy names callers by Key.
	Identity *policy.Identity
	// SelfIdentity is the node that accepted the conn, as the coordinator
	// vouches for it; nil on the file-based mesh.
	SelfIdentity *policy.Identity

	current func() bool // PeerConn.PeerCurrent of the conn; nil: always
}

// Current reports whether the conn's transport still gives p's address to
// p's key: false once the peer was removed or its address moved to another
// peer (on a tailnet: once the coordinator no longer vouches for the node
// as it did when the conn was accepted). Code that serves a conn for long
// checks it to stop serving a caller that is gone.
func (p Peer) Current() bool {
	return p.current == nil || p.current()
}

// Listener wraps a net.Listener whose conns do not know their peer (another
// transport, or a test's loopback listener standing in for the mesh): every
// conn it returns carries its [Peer], resolved once at accept time from the
// conn's source address. A conn whose peer cannot be resolved is closed and
// logged, never returned. Use [PeerOf] to read the peer of a conn. A
// *netstack.Node's own listeners need no wrapping: their conns know their
// peer already.
type Listener struct {
	net.Listener
	peers  PeerResolver
	self   meshkey.Public
	logger *slog.Logger

	// Unknown counts conns closed because no peer owns their source address.
	unknown atomic.Uint64
}

// NewListener returns a Listener that resolves the peers of ln's conns with
// peers. logger may be nil.
func NewListener(ln net.Listener, peers PeerResolver, logger *slog.Logger) *Listener {
	l := &Listener{Listener: ln, peers: peers, logger: orDiscard(logger)}
	if s, ok := peers.(interface{ PublicKey() meshkey.Public }); ok {
		l.self = s.PublicKey()
	}
	return l
}

// Accept waits for the next conn whose peer is known and returns it as a
// *[Conn].
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, err := l.resolve(c)
		if err != nil {
			l.unknown.Add(1)
			l.logger.Warn("refused conn from unknown peer", "addr", c.RemoteAddr().String(), "err", err)
			c.Close()
			continue
		}
		return &Conn{Conn: c, peer: p}, nil
	}
}

// Unknown returns how many conns were refused because no peer owns their
// source address.
func (l *Listener) Unknown() uint64 { return l.unknown.Load() }

func (l *Listener) resolve(c net.Conn) (Peer, error) {
	remote, err := addrPort(c.RemoteAddr())
	if err != nil {
		return Peer{}, err
	}
	local, _ := addrPort(c.LocalAddr())
	key, ok := l.peers.PeerForAddr(remote.Addr())
	if !ok {
		return Peer{}, errors.New("no peer owns the source address")
	}
	current := func() bool {
		k, ok := l.peers.PeerForAddr(remote.Addr())
		return ok && k == key
	}
	return Peer{Key: key, Addr: remote, Local: local, Self: l.self, current: current}, nil
}

// NodeKey returns the public key of the node the listener serves, when
// its resolver knows it (zero otherwise).
func (l *Listener) NodeKey() meshkey.Public { return l.self }

func addrPort(a net.Addr) (netip.AddrPort, error) {
	switch a := a.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	case interface{ AddrPort() netip.AddrPort }:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	if a == nil {
		return netip.AddrPort{}, errors.New("conn has no remote address")
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// Conn is a net.Conn whose peer the mesh has proved.
type Conn struct {
	net.Conn
	peer Peer
}

// Peer returns who is on the other end.
func (c *Conn) Peer() Peer { return c.peer }

// PeerKey returns the caller's public key (see [PeerConn]).
func (c *Conn) PeerKey() meshkey.Public { return c.peer.Key }

// NodeKey returns the key of the node that accepted the conn, or zero.
func (c *Conn) NodeKey() meshkey.Public { return c.peer.Self }

// PeerCurrent reports whether the conn's address still belongs to its peer.
func (c *Conn) PeerCurrent() bool { return c.peer.Current() }

// NetConn returns the conn underneath.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// PeerOf returns the peer of a [PeerConn] (a conn accepted from a
// *netstack.Node's listener or from a [Listener]), looking through wrappers
// that have a NetConn() net.Conn method (as crypto/tls conns do). ok is
// false for any other conn: such a conn must not be served.
func PeerOf(c net.Conn) (p Peer, ok bool) {
	for c != nil {
		if mc, isMesh := c.(*Conn); isMesh {
			return mc.peer, true
		}
		if pc, isPeer := c.(PeerConn); isPeer {
			remote, err := addrPort(pc.RemoteAddr())
			if err != nil {
				return Peer{}, false
			}
			local, _ := addrPort(pc.LocalAddr())
			p := Peer{Key: pc.PeerKey(), Addr: remote, Local: local, Self: pc.NodeKey(), current: pc.PeerCurrent}
			if ic, vouched := c.(IdentityConn); vouched {
				caller, self := ic.PeerIdentity(), ic.SelfIdentity()
				p.Identity, p.SelfIdentity = &caller, &self
			}
			return p, true
		}
		u, canUnwrap := c.(interface{ NetConn() net.Conn })
		if !canUnwrap {
			break
		}
		c = u.NetConn()
	}
	return Peer{}, false
}

// orDiscard returns l, or a logger that discards everything when l is nil.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// HostIsAddr reports whether an HTTP request's Host header names a, the
// mesh address and port its conn reached: the IP literal, with a's port, or
// with none when that port is 80. A page served on the mesh answers only
// such requests, so that a web page that rebinds a DNS name of its own to a
// mesh address (and would carry the visitor's mesh identity) gets nothing.
func HostIsAddr(host string, a netip.AddrPort) bool {
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		h, port = host, "80"
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	ip, err := netip.ParseAddr(h)
	if err != nil || ip.Zone() != "" {
		return false
	}
	return ip.Unmap() == a.Addr().Unmap() && port == strconv.Itoa(int(a.Port()))
}
