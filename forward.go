package sshmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/policy"
)

// Port, socket and agent forwarding (ssh -L, -D, -R, -A), gated per rule.
// The conn and session code calls the hooks below; the kinds live in
// forward_tcp.go, forward_streamlocal*.go and agent.go, the copy loop in
// forward_copy.go.

// ForwardKind is a kind of forwarding a client can ask for.
type ForwardKind int

const (
	// LocalPort is ssh -L and ssh -D (direct-tcpip): the server dials a TCP
	// address for the client.
	LocalPort ForwardKind = iota + 1
	// RemotePort is ssh -R (tcpip-forward): the server listens on a TCP
	// address and hands each conn to the client.
	RemotePort
	// LocalSocket is ssh -L to a Unix socket (direct-streamlocal@openssh.com).
	LocalSocket
	// RemoteSocket is ssh -R on a Unix socket (streamlocal-forward@openssh.com).
	RemoteSocket
	// Agent is ssh -A (auth-agent-req@openssh.com).
	Agent
)

// String returns the SSH name of the kind, e.g. "direct-tcpip".
func (k ForwardKind) String() string {
	switch k {
	case LocalPort:
		return "direct-tcpip"
	case RemotePort:
		return "tcpip-forward"
	case LocalSocket:
		return "direct-streamlocal"
	case RemoteSocket:
		return "streamlocal-forward"
	case Agent:
		return "agent"
	}
	return fmt.Sprintf("ForwardKind(%d)", int(k))
}

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

// errNotAllowed is the refusal when the rule does not allow a forward.
var errNotAllowed = errors.New("not allowed by the policy")

// allowForward decides r with Server.Forwarding or the decision, and logs a
// refusal with the rule and the target.
func (c *serverConn) allowForward(ctx context.Context, r ForwardRequest) error {
	err := c.decideForward(ctx, r)
	if err != nil {
		c.forwardRefused(r.Kind, forwardTarget(r), err.Error())
	}
	return err
}

// decideForward decides r with Server.Forwarding or the decision, without
// logging.
func (c *serverConn) decideForward(ctx context.Context, r ForwardRequest) error {
	r.Identity, r.Decision = c.identity, c.decision
	if h := c.srv.Forwarding; h != nil {
		return h.AllowForward(ctx, r)
	}
	if !r.AllowedByRule() {
		return errNotAllowed
	}
	return nil
}

// allowResolved decides a port forward to or from each of a name's
// resolved addresses and returns the allowed ones. A refusal is logged
// (naming the first refused address) only when none is allowed.
func (c *serverConn) allowResolved(ctx context.Context, kind ForwardKind, host string, addrs []netip.Addr, port uint16) ([]netip.AddrPort, error) {
	var allowed []netip.AddrPort
	var first ForwardRequest
	var firstErr error
	for _, a := range addrs {
		r := ForwardRequest{Kind: kind, Host: host, Addr: netip.AddrPortFrom(a, port)}
		if err := c.decideForward(ctx, r); err != nil {
			if firstErr == nil {
				first, firstErr = r, err
			}
			continue
		}
		allowed = append(allowed, r.Addr)
	}
	if len(allowed) == 0 {
		if firstErr == nil { // no addresses at all
			first, firstErr = ForwardRequest{Kind: kind, Host: host}, errors.New("the name has no addresses")
		}
		c.forwardRefused(kind, forwardTarget(first), firstErr.Error())
		return nil, firstErr
	}
	return allowed, nil
}

// forwardRefused logs a refused forwarding request. Forwarding events use
// the audit keys (conn, peer, addr, user, local_user, rule) plus kind
// (direct-tcpip, tcpip-forward, direct-streamlocal, streamlocal-forward,
// agent), target and reason.
func (c *serverConn) forwardRefused(k ForwardKind, target, reason string) {
	c.srv.logger().Info("forwarding refused", c.forwardAttrs(k, target, "reason", reason)...)
}

func (c *serverConn) forwardAttrs(k ForwardKind, target string, more ...any) []any {
	return append([]any{"conn", c.id, "peer", c.peer.Key.String(), "addr", c.peer.Addr.String(), "user", c.identity.User,
		"local_user", c.decision.LocalUser, "rule", c.decision.Rule, "kind", k.String(), "target", target}, more...)
}

func forwardTarget(r ForwardRequest) string {
	switch r.Kind {
	case LocalPort, RemotePort:
		if r.Addr.IsValid() {
			if r.Host != "" && r.Host != r.Addr.Addr().String() {
				return fmt.Sprintf("%s (%s)", net.JoinHostPort(r.Host, fmt.Sprint(r.Addr.Port())), r.Addr)
			}
			return r.Addr.String()
		}
		return r.Host
	case LocalSocket, RemoteSocket:
		return r.Path
	}
	return ""
}

// forwardState is what forwarding holds for one conn: remote listeners and
// the agent socket.
type forwardState struct {
	mu        sync.Mutex
	closed    bool
	ctx       context.Context // done when the conn ends (closeForwards)
	cancel    context.CancelFunc
	listeners map[string]io.Closer
	agent     *agentSocket
	wg        sync.WaitGroup // accept loops and their copies
}

// forwards returns c's forwarding state, creating it on first use, or nil
// once closeForwards has run (or ctx, the conn's or one derived from it,
// is done): nothing new may be held then.
func (c *serverConn) forwards(ctx context.Context) *forwardState {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fwdClosed || ctx.Err() != nil {
		return nil
	}
	if c.fwd == nil {
		fctx, cancel := context.WithCancel(context.Background())
		c.fwd = &forwardState{ctx: fctx, cancel: cancel, listeners: map[string]io.Closer{}}
	}
	return c.fwd
}

// currentForwards returns c's forwarding state without creating it: nil
// when nothing is forwarded.
func (c *serverConn) currentForwards() *forwardState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fwd
}

// openChannel serves a channel type other than "session". It reports
// whether it handled (accepted or rejected) the channel.
func (c *serverConn) openChannel(ctx context.Context, nch ssh.NewChannel) bool {
	switch nch.ChannelType() {
	case "direct-tcpip":
		c.directTCPIP(ctx, nch)
	case "direct-streamlocal@openssh.com":
		c.directStreamLocal(ctx, nch)
	default:
		return false
	}
	return true
}

// globalRequest serves a conn-level request such as tcpip-forward. It
// reports whether it handled (and replied to) the request.
func (c *serverConn) globalRequest(ctx context.Context, req *ssh.Request) bool {
	var ok bool
	var reply []byte
	switch req.Type {
	case "tcpip-forward":
		ok, reply = c.tcpipForward(ctx, req.Payload)
	case "cancel-tcpip-forward":
		ok = c.cancelTCPIPForward(req.Payload)
	case "streamlocal-forward@openssh.com":
		ok = c.streamLocalForward(ctx, req.Payload)
	case "cancel-streamlocal-forward@openssh.com":
		ok = c.cancelStreamLocalForward(req.Payload)
	default:
		return false
	}
	if req.WantReply {
		req.Reply(ok, reply)
	}
	return true
}

// closeForwards releases what forwarding holds when the conn ends:
// listeners, agent sockets and their directories. The conn's context is
// already done, so copies in flight are closing; it waits for them.
func (c *serverConn) closeForwards() {
	c.mu.Lock()
	st := c.fwd
	c.fwd, c.fwdClosed = nil, true
	c.mu.Unlock()
	if st == nil {
		return
	}
	st.cancel()
	st.mu.Lock()
	st.closed = true
	for k, l := range st.listeners {
		l.Close()
		delete(st.listeners, k)
	}
	agent := st.agent
	st.agent = nil
	st.mu.Unlock()
	if agent != nil {
		agent.Close()
	}
	st.wg.Wait()
}

// addListener records l under key and counts its accept loop in st.wg (the
// caller starts it and calls st.wg.Done); it fails when the conn has ended
// or key is taken.
func (st *forwardState) addListener(key string, l io.Closer) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || st.listeners[key] != nil {
		return false
	}
	st.listeners[key] = l
	st.wg.Add(1)
	return true
}

// removeListener closes and forgets the listener under key.
func (st *forwardState) removeListener(key string) bool {
	st.mu.Lock()
	l := st.listeners[key]
	delete(st.listeners, key)
	st.mu.Unlock()
	if l == nil {
		return false
	}
	l.Close()
	return true
}

// sshConn returns the conn's *ssh.ServerConn, to open channels to the client.
func (c *serverConn) sshConn() *ssh.ServerConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ssh
}

// extraRequest serves a session request the session code does not know,
// such as auth-agent-req@openssh.com; started tells whether the shell,
// command or subsystem has started. handled reports whether it is a
// forwarding request; ok is the reply.
func (s *Session) extraRequest(req *ssh.Request, started bool) (handled, ok bool) {
	switch req.Type {
	case "auth-agent-req@openssh.com":
		return true, s.agentRequest(started)
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
