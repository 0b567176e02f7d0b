// Package forward is OpenSSH's port, socket and agent forwarding (ssh -L,
// -D, -R, -A) for an SSH server: the channel types direct-tcpip and
// direct-streamlocal@openssh.com, the global requests tcpip-forward and
// streamlocal-forward@openssh.com and their cancels, and the session request
// auth-agent-req@openssh.com.
//
// Package sshmesh's Server serves these with this package by default, through
// the same Channels and GlobalRequests dispatch an embedder registers its own
// handlers with; its ConnInfo is a [Conn]. Who may forward what is the
// server's decision ([Conn.AllowForward]: its Forwarding handler or the
// policy's rule); this package carries out what is allowed.
//
// # Credentials
//
// Every socket a forward makes (the TCP dials and listeners, Unix sockets,
// the agent socket) is made with the local user's credentials when the server
// runs as root, on an OS thread switched to the user's ids for the call
// (asuser_linux.go), as sshd's session process does: the kernel decides every
// access, a service sees the user in SO_PEERCRED, and what a bind makes is
// the user's. The account must still have the uid it had at login
// ([Conn.LocalAccount]). A server that is not root acts with its own rights,
// the only ones it has. Unix-socket and agent forwarding need Linux; elsewhere
// they are refused.
//
// # Files
//
//   - forward.go: [Kind], [Target], [Conn], the handler tables, the per-conn
//     [State], refusal logging
//   - tcp.go: direct-tcpip and tcpip-forward
//   - streamlocal_linux.go: Unix sockets, walked without following symlinks
//   - agent_linux.go: the agent socket
//   - copy.go: the copy loop between a channel and a socket
//   - asuser_linux.go: running a function with a user's ids on one thread
package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/session"
)

// Kind is a kind of forwarding a client can ask for.
type Kind int

const (
	// LocalPort is ssh -L and ssh -D (direct-tcpip): the server dials a TCP
	// address for the client.
	LocalPort Kind = iota + 1
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
func (k Kind) String() string {
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
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Target is what a client asks to forward, as the server is about to carry
// it out: names are already resolved, so Addr is exactly what will be dialed
// or bound.
type Target struct {
	Kind Kind // a port or socket, local or remote, or the agent

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

// ErrNotAllowed is the refusal when the policy's rule does not allow a
// forward.
var ErrNotAllowed = errors.New("not allowed by the policy")

// Conn is an authenticated SSH conn as forwarding needs it: package
// sshmesh's ConnInfo. Its methods are safe for concurrent use.
type Conn interface {
	// Logger returns the conn's logger, with its audit keys (conn, peer,
	// addr, user, local_user, rule).
	Logger() *slog.Logger
	// AllowForward returns nil when the server allows t on this conn, or
	// the refusal. It does not log.
	AllowForward(ctx context.Context, t Target) error
	// LocalAccount returns the conn's local account, only while it has
	// the uid it had when the login was decided; an error when there is no
	// such account.
	LocalAccount() (*session.User, error)
	// OpenChannel opens a channel to the client.
	OpenChannel(kind string, payload []byte) (ssh.Channel, <-chan *ssh.Request, error)
	// Touch records activity on the conn (data moved), for the server's
	// idle timeout.
	Touch()
	// ForwardState returns what forwarding holds for the conn; the server
	// closes it when the conn ends.
	ForwardState() *State
}

// Channels returns the channel handlers of forwarding by SSH channel type,
// in the shape of package sshmesh's Server.Channels. ctx is done when the
// conn ends.
func Channels() map[string]func(ctx context.Context, c Conn, nch ssh.NewChannel) {
	return map[string]func(context.Context, Conn, ssh.NewChannel){
		"direct-tcpip":                   DirectTCPIP,
		"direct-streamlocal@openssh.com": DirectStreamLocal,
	}
}

// Requests returns the global request handlers of forwarding by request
// type, in the shape of package sshmesh's Server.GlobalRequests.
func Requests() map[string]func(ctx context.Context, c Conn, req *ssh.Request) (ok bool, reply []byte) {
	return map[string]func(context.Context, Conn, *ssh.Request) (bool, []byte){
		"tcpip-forward":                          TCPIPForward,
		"cancel-tcpip-forward":                   CancelTCPIPForward,
		"streamlocal-forward@openssh.com":        StreamLocalForward,
		"cancel-streamlocal-forward@openssh.com": CancelStreamLocalForward,
	}
}

// allow decides t and logs a refusal with the target.
func allow(ctx context.Context, c Conn, t Target) error {
	err := c.AllowForward(ctx, t)
	if err != nil {
		refused(c, t.Kind, targetOf(t), err.Error())
	}
	return err
}

// allowResolved decides a port forward to or from each of a name's
// resolved addresses and returns the allowed ones. A refusal is logged
// (naming the first refused address) only when none is allowed.
func allowResolved(ctx context.Context, c Conn, kind Kind, host string, addrs []netip.Addr, port uint16) ([]netip.AddrPort, error) {
	var allowed []netip.AddrPort
	var first Target
	var firstErr error
	for _, a := range addrs {
		t := Target{Kind: kind, Host: host, Addr: netip.AddrPortFrom(a, port)}
		if err := c.AllowForward(ctx, t); err != nil {
			if firstErr == nil {
				first, firstErr = t, err
			}
			continue
		}
		allowed = append(allowed, t.Addr)
	}
	if len(allowed) == 0 {
		if firstErr == nil { // no addresses at all
			first, firstErr = Target{Kind: kind, Host: host}, errors.New("the name has no addresses")
		}
		refused(c, kind, targetOf(first), firstErr.Error())
		return nil, firstErr
	}
	return allowed, nil
}

// refused logs a refused forwarding request. Forwarding events use the
// conn's audit keys (conn, peer, addr, user, local_user, rule) plus kind
// (direct-tcpip, tcpip-forward, direct-streamlocal, streamlocal-forward,
// agent), target and reason.
func refused(c Conn, k Kind, target, reason string) {
	c.Logger().Info("forwarding refused", "kind", k.String(), "target", target, "reason", reason)
}

// logger returns c's logger with the kind and target of a forward.
func logger(c Conn, k Kind, target string) *slog.Logger {
	return c.Logger().With("kind", k.String(), "target", target)
}

func targetOf(t Target) string {
	switch t.Kind {
	case LocalPort, RemotePort:
		if t.Addr.IsValid() {
			if t.Host != "" && t.Host != t.Addr.Addr().String() {
				return fmt.Sprintf("%s (%s)", net.JoinHostPort(t.Host, fmt.Sprint(t.Addr.Port())), t.Addr)
			}
			return t.Addr.String()
		}
		return t.Host
	case LocalSocket, RemoteSocket:
		return t.Path
	}
	return ""
}

// State is what forwarding holds for one conn: remote listeners, the agent
// socket, and the goroutines that serve them. The zero State is ready to
// use; the server calls Close when the conn ends.
type State struct {
	mu        sync.Mutex
	closed    bool
	ctx       context.Context // done when Close begins
	cancel    context.CancelFunc
	listeners map[string]io.Closer
	agent     *agentSocket
	wg        sync.WaitGroup // accept loops and their copies
}

// open returns st ready to hold something, or nil once Close has run (or
// ctx, the conn's or one derived from it, is done): nothing new may be held
// then.
func (st *State) open(ctx context.Context) *State {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || ctx.Err() != nil {
		return nil
	}
	if st.listeners == nil {
		st.ctx, st.cancel = context.WithCancel(context.Background())
		st.listeners = map[string]io.Closer{}
	}
	return st
}

// Close releases what forwarding holds when the conn ends: listeners,
// agent sockets and their directories. The conn's context is already
// done, so copies in flight are closing; Close waits for them. Nothing can
// be held after it.
func (st *State) Close() {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	st.closed = true
	if st.cancel != nil {
		st.cancel()
	}
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
func (st *State) addListener(key string, l io.Closer) bool {
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
func (st *State) removeListener(key string) bool {
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

// openToClient opens a channel of type kind to the client and pipes conn
// through it.
func openToClient(c Conn, st *State, kind string, payload []byte, conn net.Conn, target string) {
	ch, reqs, err := c.OpenChannel(kind, payload)
	if err != nil {
		c.Logger().Info("client refused forwarded channel", "kind", kind, "target", target, "err", err)
		conn.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	pipe(st.ctx, c, ch, conn)
}
