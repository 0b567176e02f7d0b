package sshmesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/session"
)

// ErrServerClosed is returned by [Server.Serve] after [Server.Shutdown] or
// [Server.Close].
var ErrServerClosed = errors.New("sshmesh: server closed")

// Server serves SSH on mesh conns. Who may log in, and as whom, follows from
// the caller's WireGuard key (see [PeerOf]) and the Policy; there are no SSH
// keys or passwords. Set the fields before calling Serve and do not change
// them after; the zero value of each optional field is documented.
type Server struct {
	// Policy decides every login. Required. Replace it on a running server
	// with SetPolicy, which also ends the sessions it no longer allows.
	Policy policy.Policy

	// Handler serves sessions. nil means [LoginHandler]: the mapped local
	// user's login shell or command, as OpenSSH's sshd runs them.
	Handler Handler

	// HostKeys are the server's host keys. Required; see
	// [LoadOrCreateHostKey] for an ed25519 key kept in a file.
	HostKeys []ssh.Signer

	// Logger receives the server's log. nil discards it.
	Logger *slog.Logger

	// LoginGraceTime bounds the handshake and the authentication of a conn,
	// counted from accept (time waiting for a startup slot is part of it),
	// like sshd's LoginGraceTime. 0 means 120 s, sshd's default: on a busy
	// host a burst of logins can take far longer than one login does, and a
	// conn cut at the limit is a failed login.
	LoginGraceTime time.Duration

	// MaxStartups caps the conns that have not finished authentication, in
	// all (conns waiting on a check count). 0 means 256.
	MaxStartups int

	// MaxStartupsPerPeer caps the unauthenticated conns of one peer, so one
	// peer cannot use up MaxStartups. 0 means 32. Conns over either cap wait
	// in a queue (up to 1,024 per peer and 2,048 in all, each for at most
	// LoginGraceTime) and start as slots free, so a burst from one host (an
	// editor, ansible through a WireGuard interface) is slowed, not refused.
	// A queued conn is not read; over sshmesh's netstack what its peer
	// writes into it costs the server at most about 46 KiB (a 32 KiB
	// initial TCP window).
	MaxStartupsPerPeer int

	// MaxSessions caps the open sessions per conn, like sshd's MaxSessions.
	// 0 means 10.
	MaxSessions int

	// MaxConnsPerPeer caps the authenticated conns of one peer; a login
	// beyond it is refused with a message. 0 means 100; negative means no
	// limit.
	MaxConnsPerPeer int

	// IdleTimeout closes a conn whose sessions moved no data for this long.
	// 0 means never.
	IdleTimeout time.Duration

	// KeepAliveInterval is how often the server asks a quiet client whether
	// it is still there (keepalive@openssh.com), like sshd's
	// ClientAliveInterval. 0 means 30 s; negative turns keepalives off.
	KeepAliveInterval time.Duration

	// KeepAliveCountMax is how many keepalives may go unanswered before the
	// conn is closed. 0 means 3.
	KeepAliveCountMax int

	// Algorithms are the SSH algorithms offered. nil means
	// [DefaultAlgorithms].
	Algorithms *Algorithms

	// Checker runs the proof-of-presence flow of "check" decisions. nil
	// refuses check decisions with a message saying so.
	Checker Checker

	// Subsystems serve the subsystems a session may ask for by name (an
	// in-process "sftp" server), instead of Handler. nil or a missing name
	// means Handler serves the subsystem (LoginHandler runs the system's
	// sftp-server for "sftp"). See the package doc on extending.
	Subsystems map[string]Handler

	// Channels serve channel types other than "session" by type, before
	// the built-in forwarding ones of package forward (which they replace,
	// with the policy's forwarding rules for them). nil means only the
	// built-in ones.
	Channels map[string]ChannelHandler

	// GlobalRequests answer conn-level requests by type, before the
	// built-in forwarding ones of package forward (which they replace).
	// nil means only the built-in ones; anything else gets a failure reply.
	GlobalRequests map[string]RequestHandler

	// Forwarding decides port, socket and agent forwarding by code. nil
	// follows the policy decision's LocalForward, RemoteForward and
	// AgentForward.
	Forwarding ForwardHandler

	// Recorder opens the recordings of sessions whose rule says "record":
	// true: a local directory, `sshmesh recorder` nodes (package recorder's
	// Client), or a sink of the embedder's. nil means
	// DirRecorder{RecordDir}.
	Recorder Recorder

	// RecordDir is where sessions whose rule says "record": true are
	// written when Recorder is nil, as asciicast v2 files named by session
	// id (mode 0600, fsynced when the session ends). "" (with a nil
	// Recorder) means such sessions cannot be recorded: each follows its
	// rule's onRecordingFailure.
	RecordDir string

	// RecordInput also records what the client types ("i" events) in
	// recorded sessions. Off by default: input holds passwords.
	RecordInput bool

	// HostRules are the host's own rules for logins to local accounts, on
	// top of the policy: before a login whose local user is an account of
	// this host is accepted, [session.CheckAccount] applies them (nologin,
	// account expiry, or PAM's account management), and a refusal shows
	// the client the host's message. [LoginHandler] runs its sessions
	// inside PAM sessions when PAMService is set. The zero value applies
	// /etc/nologin and shadow expiry without PAM; see [session.HostRules].
	// Logins whose local user is no account of the host (an appliance's
	// Go handler) are not affected.
	HostRules session.HostRules

	// Now is the clock for rule expiry and session duration. nil means
	// time.Now; tests set it.
	Now func() time.Time

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	conns      map[*serverConn]struct{}
	startups   int
	perPeer    map[[32]byte]int // unauthenticated conns per peer
	authed     map[[32]byte]int // authenticated conns per peer
	queued     map[[32]byte][]*serverConn
	nqueued    int
	closed     bool
	done       chan struct{}             // closed when the last conn ends after Shutdown
	policy     atomic.Pointer[policyBox] // set by SetPolicy
	onShutdown []func()
	webKeyOnce sync.Once // webKey is made at the first page token
	webKey     [32]byte  // signs the web terminal's page tokens (webterm.go)
}

// RegisterOnShutdown registers f to be called, in its own goroutine, when
// Shutdown begins: a way to tell long-running sessions (an interactive Go
// shell) to finish, since Shutdown waits for them.
func (s *Server) RegisterOnShutdown(f func()) {
	s.mu.Lock()
	s.onShutdown = append(s.onShutdown, f)
	s.mu.Unlock()
}

func (s *Server) logger() *slog.Logger { return orDiscard(s.Logger) }

// loginGraceTime is LoginGraceTime or its default.
func (s *Server) loginGraceTime() time.Duration { return durationOr(s.LoginGraceTime, 120*time.Second) }

func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func intOr(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// Serve accepts conns on l and serves SSH on each, until l fails or the
// server is shut down (then it returns [ErrServerClosed]). l is a
// *netstack.Node's listener (node.Listen("tcp", ":22")), whose conns know
// their peer, or a [Listener] wrapping another transport's. A conn that does
// not know its peer (a [PeerConn]) is never served: Serve closes it and
// returns an error saying so, since every conn of such a listener would be
// refused.
//
// When the policy can name nodes ([policy.Identifier]) and l knows its
// node's key (it has a NodeKey method, as both kinds do), Serve first checks
// that the policy names this node, and returns an error if not: every login
// would be refused.
func (s *Server) Serve(l net.Listener) error {
	if s.currentPolicy() == nil {
		return errors.New("sshmesh: Server.Policy is nil")
	}
	if len(s.HostKeys) == 0 {
		return errors.New("sshmesh: Server.HostKeys is empty")
	}
	if err := s.HostRules.Validate(); err != nil {
		return fmt.Errorf("sshmesh: Server.HostRules: %w", err)
	}
	if err := s.checkSelf(l); err != nil {
		return err
	}
	if !s.trackListener(l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(l, false)
	watchDone := make(chan struct{})
	defer close(watchDone)
	go s.watchPeers(watchDone)
	var tempDelay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				time.Sleep(tempDelay)
				continue
			}
			return err
		}
		tempDelay = 0
		peer, ok := PeerOf(c)
		if !ok {
			err := fmt.Errorf("sshmesh: Serve: the conn from %v does not know its mesh peer (%T is not a PeerConn): serve a *netstack.Node's listener, or wrap other listeners with NewListener", c.RemoteAddr(), c)
			s.logger().Error("refused conn without a mesh peer identity; Serve stops", "addr", c.RemoteAddr().String(), "err", err)
			c.Close()
			return err
		}
		s.admit(c, peer)
	}
}

// checkSelf returns an error when the policy can name nodes and does not
// name the node l belongs to.
func (s *Server) checkSelf(l net.Listener) error {
	id, ok := s.currentPolicy().(policy.Identifier)
	nk, hasKey := l.(interface{ NodeKey() meshkey.Public })
	if !ok || !hasKey {
		return nil
	}
	self := nk.NodeKey()
	if self.IsZero() {
		return nil
	}
	if _, named := id.Node(self); !named {
		return fmt.Errorf("sshmesh: Serve: the policy does not name this node (public key %s): every login would be refused; add the node to the policy's nodes", self)
	}
	return nil
}

func (s *Server) forget(c *serverConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseStartup(c)
	if c.connSlot {
		c.connSlot = false
		if s.authed[c.peer.Key]--; s.authed[c.peer.Key] <= 0 {
			delete(s.authed, c.peer.Key)
		}
	}
	delete(s.conns, c)
	if s.closed && len(s.conns) == 0 && s.done != nil {
		close(s.done)
		s.done = nil
	}
}

func (s *Server) trackListener(l net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		if s.listeners == nil {
			s.listeners = make(map[net.Listener]struct{})
		}
		s.listeners[l] = struct{}{}
		return true
	}
	delete(s.listeners, l)
	return true
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown stops accepting conns, closes conns that have no open session,
// and waits for the open sessions to end. When ctx ends first, it closes
// every conn and returns ctx's error. Serve then returns ErrServerClosed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.dropQueued()
	for l := range s.listeners {
		l.Close()
	}
	done := make(chan struct{})
	if len(s.conns) == 0 {
		close(done)
	} else {
		s.done = done
	}
	idle := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		idle = append(idle, c)
	}
	for _, f := range s.onShutdown {
		go f()
	}
	s.mu.Unlock()
	for _, c := range idle {
		c.closeIfIdle()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close closes the listeners and every conn at once. Sessions end without
// exit status. Serve then returns ErrServerClosed.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.dropQueued()
	var err error
	for l := range s.listeners {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.setCloseReason("server closed")
		c.nc.Close()
	}
	return err
}

// sshConfig returns the server config for one conn; its callbacks close
// over that conn.
func (s *Server) sshConfig(c *serverConn) *ssh.ServerConfig {
	algs := s.Algorithms
	if algs == nil {
		algs = DefaultAlgorithms()
	}
	cfg := &ssh.ServerConfig{
		Config: ssh.Config{
			KeyExchanges: algs.KeyExchanges,
			Ciphers:      algs.Ciphers,
			MACs:         algs.MACs,
		},
		NoClientAuth:         true,
		NoClientAuthCallback: c.authNone,
		MaxAuthTries:         6,
		PreAuthConnCallback:  func(pc ssh.ServerPreAuthConn) { c.preAuth = pc },
		ServerVersion:        "SSH-2.0-sshmesh",
	}
	for _, k := range s.HostKeys {
		cfg.AddHostKey(k)
	}
	return cfg
}
