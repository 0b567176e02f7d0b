package tailnet

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

// Listen listens on the node's tailnet addresses (address is ":PORT").
// Each conn it returns is a *[Conn]: the coordinator's word on its caller,
// asked at accept. Conns from callers the node cannot name (WhoIs fails),
// from nodes shared in from another tailnet and from expired nodes are
// closed and logged, never returned.
//
// The listener has no NodeKey method on purpose: a tailnet policy names the
// server by its tags or owner (each conn's SelfIdentity), not by a key in a
// "nodes" section, so [sshmesh.Server.Serve] must not look for one.
func (n *Node) Listen(network, address string) (net.Listener, error) {
	ln, err := n.ts.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return &listener{Listener: ln, node: n}, nil
}

type listener struct {
	net.Listener
	node *Node
}

// Accept returns the next conn whose caller the coordinator vouches for.
func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, err := l.node.admit(c)
		if err != nil {
			l.node.logger.Warn("tailnet: refused conn", "addr", c.RemoteAddr().String(), "err", err)
			c.Close()
			continue
		}
		return tc, nil
	}
}

// whoisTimeout bounds the WhoIs of a new conn (an in-process call).
const whoisTimeout = 10 * time.Second

// admit names the caller of c and starts following it.
func (n *Node) admit(c net.Conn) (*Conn, error) {
	w := n.watch
	gen := w.generation()
	ctx, cancel := context.WithTimeout(n.ctx, whoisTimeout)
	defer cancel()
	who, err := n.lc.WhoIs(ctx, c.RemoteAddr().String())
	if err != nil {
		return nil, fmt.Errorf("whois: %w", err)
	}
	id, err := identityOf(who, time.Now())
	if err != nil {
		return nil, err
	}
	tc := &Conn{Conn: c, watch: w, selfKey: w.selfKey, peer: id, self: w.selfIdentity()}
	tc.setExpiry(who.Node.KeyExpiry)
	if w.track(tc) != gen {
		// The netmap changed while the caller was being named: ask again.
		w.recheck(ctx, tc)
	}
	return tc, nil
}

// Conn is a tailnet conn whose caller the coordinator vouches for; it
// implements [sshmesh.IdentityConn].
type Conn struct {
	net.Conn
	watch   *watcher
	peer    policy.Identity
	self    policy.Identity
	selfKey meshkey.Public

	keyExpiry atomic.Int64 // unix nanos; 0 = never
	gone      atomic.Bool  // the watcher found the caller changed or gone
	closeOnce sync.Once
}

var _ sshmesh.IdentityConn = (*Conn)(nil)

// PeerKey returns the caller's node key.
func (c *Conn) PeerKey() meshkey.Public { return c.peer.Key }

// NodeKey returns this node's node key.
func (c *Conn) NodeKey() meshkey.Public { return c.selfKey }

// PeerIdentity returns the caller as the coordinator vouched for it at
// accept: node key, node name, login (untagged nodes) and tags.
func (c *Conn) PeerIdentity() policy.Identity { return cloneIdentity(c.peer) }

// SelfIdentity returns this node as the coordinator vouched for it at accept.
func (c *Conn) SelfIdentity() policy.Identity { return cloneIdentity(c.self) }

// PeerCurrent reports whether the caller is still what it was at accept:
// in the netmap with the same key, user and tags, its key not expired, and
// this node's own user and tags unchanged.
func (c *Conn) PeerCurrent() bool {
	if c.gone.Load() {
		return false
	}
	exp := c.keyExpiry.Load()
	return exp == 0 || time.Now().UnixNano() < exp
}

// Close closes the conn and stops following its caller.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { c.watch.untrack(c) })
	return c.Conn.Close()
}

func (c *Conn) setExpiry(t time.Time) {
	if t.IsZero() {
		c.keyExpiry.Store(0)
		return
	}
	c.keyExpiry.Store(t.UnixNano())
}

func cloneIdentity(id policy.Identity) policy.Identity {
	id.Tags = append([]string(nil), id.Tags...)
	return id
}
