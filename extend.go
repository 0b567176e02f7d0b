package sshmesh

import (
	"bytes"
	"context"
	"errors"
	"log/slog"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/forward"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/session"
)

// Extending the protocol: a Server serves "session" channels itself
// (through Handler, or a handler of Subsystems), and the forwarding
// channel types and global requests of OpenSSH (package forward) as the
// policy allows. An embedder adds its own subsystems (an in-process SFTP
// server), channel types and global requests with the Server's Subsystems,
// Channels and GlobalRequests maps. Their handlers run only for
// authenticated conns, and get the conn as a typed [ConnInfo], not a bag
// of values.
//
// The dispatch order: a session's subsystem request goes to
// Subsystems[name] when there is one, else to Handler; a channel type
// other than "session" goes to Channels[type] when there is one, else to
// forwarding's (forward.Channels: direct-tcpip, direct-streamlocal), else
// it is rejected; a global request goes to GlobalRequests[type] when there
// is one, else to forwarding's (forward.Requests), else it gets a failure
// reply. Forwarding's handlers are registered the way an embedder's are:
// they get the same ConnInfo (a forward.Conn) and nothing else. A
// registered handler replaces the built-in one of its name, and with it the
// policy's forwarding rules for it: it decides itself.

// ConnInfo is an authenticated SSH conn as the handlers of its channels
// and requests see it; it is the [forward.Conn] package forward's handlers
// serve. Its methods are safe for concurrent use.
type ConnInfo struct{ c *serverConn }

var _ forward.Conn = ConnInfo{}

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

// Logger returns the server's logger with the conn's audit keys: conn,
// peer, addr, user, local_user and rule.
func (ci ConnInfo) Logger() *slog.Logger {
	c := ci.c
	return c.log().With("addr", c.peer.Addr.String(), "user", c.identity.User, "local_user", c.decision.LocalUser, "rule", c.decision.Rule)
}

// AllowForward decides a forward for the conn as the server does:
// [Server.Forwarding] when it is set, else the policy decision's rule
// ([ForwardRequest.AllowedByRule]; a refusal is [forward.ErrNotAllowed]).
// It does not log.
func (ci ConnInfo) AllowForward(ctx context.Context, t forward.Target) error {
	return ci.c.allowForward(ctx, t)
}

// LocalAccount returns the conn's local account as the host has it now,
// only while it has the uid it had when the login was decided: what acts
// as the user (forwarding's sockets) acts as exactly the account the
// policy judged, or not at all. It returns an error when the local user is
// no account on this host (an appliance's) or its uid has changed.
func (ci ConnInfo) LocalAccount() (*session.User, error) { return ci.c.localAccount() }

// OpenChannel opens a channel of type kind to the client (forwarded-tcpip,
// auth-agent@openssh.com, or an embedder's own), as ssh.Conn.OpenChannel.
// It returns an error when the conn ends before the client answers.
func (ci ConnInfo) OpenChannel(kind string, payload []byte) (ssh.Channel, <-chan *ssh.Request, error) {
	sc, ended := ci.c.sshConn()
	if sc == nil {
		return nil, nil, errors.New("sshmesh: the conn is not open")
	}
	return openChannel(sc, ended, kind, payload)
}

// errConnEnded is what opening a channel gives when the conn ended first.
var errConnEnded = errors.New("sshmesh: the conn ended before the client answered the channel open")

// openChannel opens a channel on sc, giving up when ended is closed.
// x/crypto's OpenChannel can wait for an answer forever when the conn
// closes just as the open goes out (the mux forgets its channels on EOF,
// then the new channel joins the list and is never closed; seen in
// TestForwardNoLeak); what waits for an open (a forward's copy, which the
// conn's end waits for) must not wait with it. A channel that opens after
// the caller gave up is closed.
func openChannel(sc interface {
	OpenChannel(string, []byte) (ssh.Channel, <-chan *ssh.Request, error)
}, ended <-chan struct{}, kind string, payload []byte) (ssh.Channel, <-chan *ssh.Request, error) {
	select {
	case <-ended:
		// The mux is gone: an open now could only wait (a forward's
		// listener can still accept as the conn ends).
		return nil, nil, errConnEnded
	default:
	}
	type opened struct {
		ch   ssh.Channel
		reqs <-chan *ssh.Request
		err  error
	}
	payload = bytes.Clone(payload) // the open may go out after this returns
	res := make(chan opened)       // unbuffered: a result is either taken or cleaned up below
	go func() {
		ch, reqs, err := sc.OpenChannel(kind, payload)
		select {
		case res <- opened{ch, reqs, err}:
		case <-ended:
			if err == nil {
				ch.Close()
				go ssh.DiscardRequests(reqs)
			}
		}
	}()
	select {
	case r := <-res:
		return r.ch, r.reqs, r.err
	case <-ended:
		return nil, nil, errConnEnded
	}
}

// Touch records activity on the conn: data moved on a channel of a
// handler's, which keeps Server.IdleTimeout from closing the conn, as
// session data does.
func (ci ConnInfo) Touch() { ci.c.touch() }

// ForwardState returns what package forward holds for the conn (remote
// listeners, the agent socket); the server closes it when the conn ends.
func (ci ConnInfo) ForwardState() *forward.State { return &ci.c.fwd }

// ChannelHandler serves a new channel of a type registered in
// Server.Channels: it accepts (nch.Accept) or rejects it, and owns the
// channel until it closes it. ctx is done when the conn ends.
type ChannelHandler func(ctx context.Context, conn ConnInfo, nch ssh.NewChannel)

// RequestHandler answers a global request of a type registered in
// Server.GlobalRequests: ok and reply are sent back when the client wants
// a reply. ctx is done when the conn ends.
type RequestHandler func(ctx context.Context, conn ConnInfo, req *ssh.Request) (ok bool, reply []byte)

// dispatchChannel serves nch with the embedder's handler for its type, or
// forwarding's, reporting whether there is one.
func (c *serverConn) dispatchChannel(ctx context.Context, nch ssh.NewChannel) bool {
	t := nch.ChannelType()
	if h := c.srv.Channels[t]; h != nil {
		h(ctx, ConnInfo{c}, nch)
		return true
	}
	if h := forward.Channels()[t]; h != nil {
		h(ctx, ConnInfo{c}, nch)
		return true
	}
	return false
}

// dispatchRequest answers req with the embedder's handler for its type, or
// forwarding's, reporting whether there is one.
func (c *serverConn) dispatchRequest(ctx context.Context, req *ssh.Request) bool {
	var ok bool
	var reply []byte
	if h := c.srv.GlobalRequests[req.Type]; h != nil {
		ok, reply = h(ctx, ConnInfo{c}, req)
	} else if h := forward.Requests()[req.Type]; h != nil {
		ok, reply = h(ctx, ConnInfo{c}, req)
	} else {
		return false
	}
	if req.WantReply {
		req.Reply(ok, reply)
	}
	return true
}

// sshConn returns the conn's *ssh.ServerConn, to open channels to the
// client, and what is closed when the conn ends (nil before it is
// authenticated).
func (c *serverConn) sshConn() (*ssh.ServerConn, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ssh, c.ended
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
