package sshmesh

import (
	"context"
	"net/netip"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/forward"
	"github.com/sshmesh/sshmesh/policy"
)

// Port, socket and agent forwarding (ssh -L, -D, -R, -A): the decision is
// the core's (Server.Forwarding or the policy's rule, through
// ConnInfo.AllowForward); package forward carries out what is allowed, its
// channel types and global requests registered with the dispatch in
// extend.go, and its agent request with the session's (extraRequest).

// ForwardKind is a kind of forwarding a client can ask for.
type ForwardKind = forward.Kind

// The kinds of forwarding, as package forward names them.
const (
	LocalPort    = forward.LocalPort    // ssh -L and -D (direct-tcpip)
	RemotePort   = forward.RemotePort   // ssh -R (tcpip-forward)
	LocalSocket  = forward.LocalSocket  // ssh -L to a Unix socket (direct-streamlocal@openssh.com)
	RemoteSocket = forward.RemoteSocket // ssh -R on a Unix socket (streamlocal-forward@openssh.com)
	Agent        = forward.Agent        // ssh -A (auth-agent-req@openssh.com)
)

// ForwardRequest is one forwarding request, as the server is about to carry
// it out: names are already resolved, so Addr is exactly what will be dialed
// or bound.
type ForwardRequest struct {
	Kind     ForwardKind     // what is asked: a port or socket, local or remote, or the agent
	Identity Identity        // who asks
	Decision policy.Decision // the decision that let the conn in

	// Host is the host the client named (LocalPort, RemotePort), before
	// resolution; "" and "localhost" bind loopback for RemotePort.
	Host string
	// Addr is the address the server will dial (LocalPort) or bind
	// (RemotePort; port 0 asks for any). A name that resolves to several
	// addresses is decided once per address, and only the allowed ones are
	// used.
	Addr netip.AddrPort
	// Path is the socket's path (LocalSocket, RemoteSocket), absolute and
	// cleaned.
	Path string
}

// AllowedByRule reports what the policy decision says about r; it is what
// the server does when [Server.Forwarding] is nil, so a ForwardHandler can
// add to it or narrow it.
//
//   - LocalPort and RemotePort: a Decision.LocalForward or RemoteForward
//     pattern covers Host (when it is a name) or Addr's address, and the port
//     (see [policy.ForwardAllowed]). A name that resolves to an address a
//     pattern covers is allowed to that address only, which is all that is
//     dialed: there is no DNS rebinding past the filter.
//   - LocalSocket and RemoteSocket: a pattern of the same lists that is an
//     absolute path matches Path (see [policy.SocketForwardAllowed]).
//     HOST:PORT patterns, even *:*, never allow sockets.
//   - Agent: Decision.AgentForward.
func (r ForwardRequest) AllowedByRule() bool {
	d := r.Decision
	switch r.Kind {
	case LocalPort, RemotePort:
		pats := d.LocalForward
		if r.Kind == RemotePort {
			pats = d.RemoteForward
		}
		port := int(r.Addr.Port())
		if _, err := netip.ParseAddr(r.Host); err != nil && r.Host != "" && policy.ForwardAllowed(pats, r.Host, port) {
			return true
		}
		return r.Addr.IsValid() && policy.ForwardAllowed(pats, r.Addr.Addr().Unmap().String(), port)
	case LocalSocket:
		return policy.SocketForwardAllowed(d.LocalForward, r.Path)
	case RemoteSocket:
		return policy.SocketForwardAllowed(d.RemoteForward, r.Path)
	case Agent:
		return d.AgentForward
	}
	return false
}

// ForwardHandler decides forwarding by code, in place of the policy
// decision's LocalForward, RemoteForward and AgentForward (an appliance may
// allow forwarding to its own services only, or none). The server's own
// limits hold either way: remote ports below 1024 only for root, sockets only
// under the user's home, /tmp and /run/user/UID and connected or bound with
// the user's credentials (so the kernel decides the access, and a service
// sees the user in SO_PEERCRED), agent sockets made by the user and private
// to them.
type ForwardHandler interface {
	// AllowForward returns nil to allow r, or an error to refuse it. The
	// error's text is logged and, where SSH carries a reason (channel
	// opens), shown to the client. Called concurrently; keep it quick.
	AllowForward(ctx context.Context, r ForwardRequest) error
}

// ForwardHandlerFunc adapts an ordinary function to [ForwardHandler].
type ForwardHandlerFunc func(ctx context.Context, r ForwardRequest) error

// AllowForward calls f(ctx, r).
func (f ForwardHandlerFunc) AllowForward(ctx context.Context, r ForwardRequest) error {
	return f(ctx, r)
}

// allowForward decides t for c with Server.Forwarding or the decision.
func (c *serverConn) allowForward(ctx context.Context, t forward.Target) error {
	r := ForwardRequest{Kind: t.Kind, Identity: c.identity, Decision: c.decision, Host: t.Host, Addr: t.Addr, Path: t.Path}
	if h := c.srv.Forwarding; h != nil {
		return h.AllowForward(ctx, r)
	}
	if !r.AllowedByRule() {
		return forward.ErrNotAllowed
	}
	return nil
}

// extraRequest serves a session request the session code does not know,
// such as auth-agent-req@openssh.com; started tells whether the shell,
// command or subsystem has started. handled reports whether it is a
// forwarding request; ok is the reply.
func (s *Session) extraRequest(req *ssh.Request, started bool) (handled, ok bool) {
	switch req.Type {
	case "auth-agent-req@openssh.com":
		sock, ok := forward.AgentRequest(s.life, ConnInfo{s.conn}, started)
		if ok {
			s.extraEnv = append(s.extraEnv, "SSH_AUTH_SOCK="+sock)
		}
		return true, ok
	}
	return false, false
}

// AgentSocket returns the path of the forwarded agent's socket (what
// SSH_AUTH_SOCK is set to in a login session), or "" when the client did
// not ask for agent forwarding or it was refused. A custom [Handler] can
// pass it on to its own programs.
func (s *Session) AgentSocket() string {
	for _, kv := range s.extraEnv {
		if v, ok := strings.CutPrefix(kv, "SSH_AUTH_SOCK="); ok {
			return v
		}
	}
	return ""
}
