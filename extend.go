package sshmesh

import (
	"context"
	"log/slog"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/policy"
)

// Extending the protocol: a Server serves "session" channels itself
// (through Handler, or a handler of Subsystems), and the forwarding
// channel types and global requests of OpenSSH as the policy allows. An
// embedder adds its own subsystems (an in-process SFTP server), channel
// types and global requests with the Server's Subsystems, Channels and
// GlobalRequests maps. Their handlers run only for authenticated conns,
// and get the conn as a typed [ConnInfo], not a bag of values.
//
// The dispatch order: a session's subsystem request goes to
// Subsystems[name] when there is one, else to Handler; a channel type
// other than "session" goes to Channels[type] when there is one, else to
// the built-in forwarding (direct-tcpip, direct-streamlocal), else it is
// rejected; a global request goes to GlobalRequests[type] when there is
// one, else to the built-in forwarding requests, else it gets a failure
// reply. A registered handler replaces the built-in one of its name, and
// with it the policy's forwarding rules for it: it decides itself.

// ConnInfo is an authenticated SSH conn as the handlers of its channels
// and requests see it. Its methods are safe for concurrent use.
type ConnInfo struct{ c *serverConn }

// ID returns the conn's id, which ties its audit events together.
func (ci ConnInfo) ID() string { return ci.c.id }

// Identity returns who is logged in on the conn.
func (ci ConnInfo) Identity() Identity { return ci.c.identity }

// LocalUser returns the local account the policy mapped the caller to.
func (ci ConnInfo) LocalUser() string { return ci.c.decision.LocalUser }

// Decision returns the policy decision that let the conn in.
func (ci ConnInfo) Decision() policy.Decision { return ci.c.decision }

// Peer returns the conn's mesh peer as the listener proved it.
func (ci ConnInfo) Peer() Peer { return ci.c.peer }

// Logger returns the server's logger with the conn's id and peer.
func (ci ConnInfo) Logger() *slog.Logger {
	return ci.c.srv.logger().With("conn", ci.c.id, "peer", ci.c.peer.Key.String())
}

// ChannelHandler serves a new channel of a type registered in
// Server.Channels: it accepts (nch.Accept) or rejects it, and owns the
// channel until it closes it. ctx is done when the conn ends.
type ChannelHandler func(ctx context.Context, conn ConnInfo, nch ssh.NewChannel)

// RequestHandler answers a global request of a type registered in
// Server.GlobalRequests: ok and reply are sent back when the client wants
// a reply. ctx is done when the conn ends.
type RequestHandler func(ctx context.Context, conn ConnInfo, req *ssh.Request) (ok bool, reply []byte)

// registeredChannel serves nch with the embedder's handler for its type,
// reporting whether there is one.
func (c *serverConn) registeredChannel(ctx context.Context, nch ssh.NewChannel) bool {
	h := c.srv.Channels[nch.ChannelType()]
	if h == nil {
		return false
	}
	h(ctx, ConnInfo{c}, nch)
	return true
}

// registeredRequest answers req with the embedder's handler for its type,
// reporting whether there is one.
func (c *serverConn) registeredRequest(ctx context.Context, req *ssh.Request) bool {
	h := c.srv.GlobalRequests[req.Type]
	if h == nil {
		return false
	}
	ok, reply := h(ctx, ConnInfo{c}, req)
	if req.WantReply {
		req.Reply(ok, reply)
	}
	return true
}

// sessionHandler returns the handler of a session: the registered one of
// its subsystem, else Server.Handler, else LoginHandler.
func (s *Server) sessionHandler(sess *Session) Handler {
	if sub := sess.Subsystem(); sub != "" {
		if h := s.Subsystems[sub]; h != nil {
			return h
		}
	}
	if s.Handler != nil {
		return s.Handler
	}
	return LoginHandler()
}
