package sshmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/forward"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/session"
)

// serverConn is one SSH conn: from the handshake to the last session.
type serverConn struct {
	srv      *Server
	logger   *slog.Logger // the server's, with the conn's id and peer (log)
	nc       net.Conn
	peer     Peer
	id       string // ties the conn's audit events together
	startup  bool   // holds a MaxStartups slot; guarded by srv.mu
	connSlot bool   // holds a MaxConnsPerPeer slot; guarded by srv.mu
	// queueTimer closes the conn when it waits too long for a startup
	// slot; guarded by srv.mu.
	queueTimer *time.Timer
	accepted   time.Time // when the conn was accepted

	preAuth  ssh.ServerPreAuthConn
	request  policy.Request  // the login request that was decided
	decision policy.Decision // set by authNone before the handshake ends
	identity Identity
	localUID string // uid of decision.LocalUser when the login was decided; "" if no account

	lastActive atomic.Int64 // unix nanos of the last session data
	heard      atomic.Int64 // unix nanos of the last bytes read from the client
	expires    atomic.Int64 // unix nanos when the rule stops allowing the conn; 0 = never
	sessionSeq atomic.Int64
	revoked    atomic.Bool // set once watchPeers has revoked the conn

	fwd forward.State // what port, socket and agent forwarding hold; closed when the conn ends

	mu       sync.Mutex
	sessions int
	open     map[*Session]struct{}
	ssh      *ssh.ServerConn // nil for a web terminal's conn
	ended    <-chan struct{} // closed when the authenticated conn ends (its channels are done)
	wd       *watchdog       // the conn's keepalives and deadlines, once authenticated
	// link is the authenticated conn's transport: ssh, or a web terminal's
	// WebSocket (webterm_session.go); nil until authenticated.
	link        connLink
	closeReason string
	refusal     string // why the last login attempt was refused (refuse)
	notice      string // what the host's account check said when it allowed the login; shown once

	// checkEndpoint is where the peer's packets came from when its login
	// began to wait for a check (zero: no check, or not known).
	checkEndpoint netip.AddrPort
}

// peerEndpoint is where the node last heard the conn's peer from, when its
// transport knows (a netstack conn does), else zero.
func (c *serverConn) peerEndpoint() netip.AddrPort {
	for nc := net.Conn(c.nc); nc != nil; {
		if pe, ok := nc.(interface{ PeerEndpoint() netip.AddrPort }); ok {
			return pe.PeerEndpoint()
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	return netip.AddrPort{}
}

// endpointMoved explains a conn that ended after its peer's endpoint moved
// while the login waited for a check: the same address on another port is
// another process with the same key (a second `sshmesh nc`, a proxy) that
// took the peer's traffic; another address is the peer roaming. "" when
// nothing moved, or nobody knows.
func (c *serverConn) endpointMoved() string {
	was := c.checkEndpoint
	if !was.IsValid() {
		return ""
	}
	now := c.peerEndpoint()
	switch {
	case !now.IsValid() || now == was:
		return ""
	case now.Addr() == was.Addr():
		return fmt.Sprintf("endpoint moved to another process with the same key (from %s to %s): the conn's packets went there", was, now)
	}
	return fmt.Sprintf("client disconnected after its endpoint moved from %s to %s", was, now)
}

func (c *serverConn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

// setCloseReason records why the conn ends, for the audit log; the first
// reason given wins.
func (c *serverConn) setCloseReason(r string) {
	c.mu.Lock()
	if c.closeReason == "" {
		c.closeReason = r
	}
	c.mu.Unlock()
}

func (c *serverConn) serve() {
	s := c.srv
	defer s.forget(c)
	defer c.nc.Close()

	// The login grace time counts from accept: time in the startup queue
	// is part of it.
	c.nc.SetDeadline(c.accepted.Add(s.loginGraceTime()))
	sconn, chans, reqs, err := ssh.NewServerConn(heardConn{c.nc, c}, s.sshConfig(c))
	if err != nil {
		reason := "handshake failed: " + err.Error()
		c.mu.Lock()
		closedBy := c.closeReason // the server closed the conn (Shutdown, Close)
		refused := c.refusal
		c.mu.Unlock()
		var ne net.Error
		switch {
		case closedBy != "":
			reason = closedBy
		case refused != "":
			reason = "login refused: " + refused
		case c.endpointMoved() != "":
			reason = c.endpointMoved()
		case errors.Is(err, io.EOF):
			reason = "client closed before authentication"
		case errors.As(err, &ne) && ne.Timeout():
			reason = "login grace time exceeded"
		}
		c.log().Info("conn closed", "addr", c.peer.Addr.String(), "reason", reason)
		return
	}
	c.nc.SetDeadline(time.Time{})
	s.authenticated(c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.mu.Lock()
	c.ssh = sconn
	c.link = sconn
	c.ended = ctx.Done()
	c.mu.Unlock()
	if !c.decision.Expires.IsZero() {
		c.expires.Store(c.decision.Expires.UnixNano())
	}

	c.watch(ctx, sconn)

	var wg sync.WaitGroup
	for {
		var nch ssh.NewChannel
		select {
		case nch = <-chans:
		case req, ok := <-reqs:
			// The conn's first global request starts the goroutine that
			// answers it and every later one, in order: most conns send
			// none, and an idle conn then holds no goroutine for them.
			if ok {
				go c.globalRequests(ctx, req, reqs)
			}
			reqs = nil
			continue
		}
		if nch == nil {
			break // chans is closed: the conn has ended
		}
		switch nch.ChannelType() {
		case "session":
			if !c.openSession() {
				nch.Reject(ssh.ResourceShortage, "too many sessions on this connection (MaxSessions)")
				continue
			}
			ch, chReqs, err := nch.Accept()
			if err != nil {
				c.closeSession()
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.closeSession()
				c.runSession(ctx, ch, chReqs)
			}()
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				if !c.dispatchChannel(ctx, nch) {
					nch.Reject(ssh.UnknownChannelType, "channel type "+nch.ChannelType()+" is not supported")
				}
			}()
		}
	}
	if moved := c.endpointMoved(); moved != "" {
		c.setCloseReason(moved)
	}
	c.setCloseReason("client disconnected")
	cancel()
	c.fwd.Close()
	wg.Wait()
	c.mu.Lock()
	reason := c.closeReason
	c.mu.Unlock()
	c.log().Info("conn closed", "addr", c.peer.Addr.String(),
		"user", c.identity.User, "local_user", c.decision.LocalUser, "reason", reason)
}

func (c *serverConn) runSession(ctx context.Context, ch ssh.Channel, reqs <-chan *ssh.Request) {
	s := c.srv
	life, end := context.WithCancel(ctx)
	sctx, cancel := context.WithCancel(life)
	if s.isClosed() {
		cancel() // Shutdown has begun: the handler should finish at once
	}
	sess := &Session{
		ch: ch, conn: c, ctx: sctx, cancel: cancel, life: life, end: end,
		id:      fmt.Sprintf("%s-%d", c.id, c.sessionSeq.Add(1)),
		windows: make(chan Window, 1),
		signals: make(chan Signal, 16),
		breaks:  make(chan time.Duration, 4),
	}
	sess.stderr = stderrWriter{sess}
	sess.extraEnv = []string{"SSHMESH_SESSION_ID=" + sess.id}
	c.mu.Lock()
	if c.open == nil {
		c.open = make(map[*Session]struct{})
	}
	c.open[sess] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.open, sess)
		c.mu.Unlock()
	}()
	done := make(chan struct{})
	sess.handleRequests(reqs, s.sessionHandler, done)
	<-done
	end()
	ch.Close()
}

func (c *serverConn) openSession() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sessions >= intOr(c.srv.MaxSessions, 10) {
		return false
	}
	c.sessions++
	return true
}

func (c *serverConn) closeSession() {
	c.mu.Lock()
	c.sessions--
	idle := c.sessions == 0
	c.mu.Unlock()
	if idle && c.srv.isClosed() {
		c.setCloseReason("server shut down")
		c.nc.Close()
	}
}

// closeIfIdle closes the conn when it has no open session, and tells the
// open sessions' handlers to finish (their Context is done) (Shutdown).
func (c *serverConn) closeIfIdle() {
	c.mu.Lock()
	idle := c.sessions == 0
	for sess := range c.open {
		sess.cancel()
	}
	c.mu.Unlock()
	if idle {
		c.setCloseReason("server shut down")
		c.nc.Close()
	}
}

// globalRequests answers conn-level requests: registered and forwarding
// requests go to their handlers (dispatchRequest); keepalive@openssh.com and
// anything unknown get a failure reply, which is what OpenSSH clients expect
// (any reply proves the server is alive). It answers first, then the rest
// of reqs until the conn ends.
func (c *serverConn) globalRequests(ctx context.Context, first *ssh.Request, reqs <-chan *ssh.Request) {
	for req := first; req != nil; req = <-reqs {
		if c.dispatchRequest(ctx, req) {
			continue
		}
		if req.WantReply {
			req.Reply(false, nil)
		}
	}
}

// authNone decides a login attempt: the caller's identity is the conn's
// mesh peer, the decision the policy's for the login name asked for.
func (c *serverConn) authNone(meta ssh.ConnMetadata) (*ssh.Permissions, error) {
	banner := func(msg string) error {
		if c.preAuth == nil {
			return errors.New("sshmesh: no pre-auth conn to send a banner on")
		}
		return c.preAuth.SendAuthBanner(msg)
	}
	if err := c.decide(meta.User(), banner); err != nil {
		return nil, err
	}
	return &ssh.Permissions{}, nil
}

// decide decides a login as user, for ssh (authNone) and the web terminal
// alike: the policy's decision for the conn's peer, a check when the rule
// asks for one (its messages go to banner), the account lookups and the
// per-peer conn limit. It returns nil when the login may go on, with the
// conn's request, decision and identity set; otherwise the refusal, an
// *ssh.BannerError whose Message is for the client.
func (c *serverConn) decide(user string, banner func(string) error) error {
	s := c.srv
	log := c.log()
	req := policy.Request{Key: c.peer.Key, Addr: c.peer.Addr, Self: c.peer.Self, User: user,
		Caller: c.peer.Identity, Server: c.peer.SelfIdentity}
	acct, err := lookupAccount(req.User)
	if err != nil {
		// Not an unknown name: the host could not answer. Whether the name
		// is root is unknown, so nothing is decided.
		c.log().Error("auth decision: cannot look up the login's account; refused", "user", req.User, "err", err)
		return c.refuse("cannot look up the account "+req.User, "access denied")
	}
	req.RootUser = req.User == "root" || acct != nil && acct.Uid == "0"
	ctx, cancel := context.WithTimeout(context.Background(), s.loginGraceTime())
	defer cancel()
	d, err := s.currentPolicy().Evaluate(ctx, req)
	if err != nil {
		c.log().Error("auth decision", "user", req.User, "action", "reject", "err", err)
		return c.refuse("the policy failed to decide", "access denied")
	}
	if d.Caller.Node == "" && d.Caller.Owner == "" && len(d.Caller.Tags) == 0 && req.Caller != nil {
		// The policy said nothing about the caller (a policy.Func): the
		// coordinator's word names it in the log and on the check page.
		d.Caller = *req.Caller
	}
	attrs := []any{"node", d.Caller.Node, "owner", d.Caller.Owner, "addr", c.peer.Addr.String(),
		"user", req.User, "local_user", d.LocalUser, "action", d.Action.String(), "rule", d.Rule, "rule_pos", d.RulePos, "message", d.Message}
	switch {
	case d.Action == policy.Check:
		if err := c.check(d, req, attrs, banner); err != nil {
			return err
		}
	case d.Action != policy.Accept:
		log.Info("auth decision", attrs...)
		msg := d.Message
		if msg == "" {
			msg = "access denied"
		}
		why := "no rule allows " + req.User
		if d.Rule != "" {
			why = "rule " + d.Rule + " rejects " + req.User
		}
		return c.refuse(why, msg)
	case d.LocalUser == "":
		log.Error("auth decision: policy accepted without a local user; refused", attrs...)
		return c.refuse("the policy accepted without a local user", "access denied")
	default:
		log.Info("auth decision", attrs...)
	}
	// The peer was resolved at accept; the mesh may have given its address
	// to another key since (SetPeers), and that key may have finished the
	// key exchange. Serve only the key that still owns the address.
	if !c.peer.Current() {
		log.Warn("login refused: the conn's address no longer belongs to its peer", attrs...)
		return c.refuse("the conn's address no longer belongs to its peer", "access denied")
	}
	// The local account as it is now, kept for the session and the
	// forwards: they act as exactly this uid, or not at all.
	if d.LocalUser != req.User {
		if acct, err = lookupAccount(d.LocalUser); err != nil {
			log.Error("login refused: cannot look up the local account", append(attrs, "err", err)...)
			return c.refuse("cannot look up the account "+d.LocalUser, "access denied")
		}
	}
	if acct != nil {
		c.localUID = acct.Uid
		// The host's own rules: nologin, expiry, PAM's account management.
		notice, err := session.CheckAccount(ctx, s.HostRules, session.Account{User: acct, Remote: c.peer.Addr})
		c.mu.Lock()
		c.notice = notice
		c.mu.Unlock()
		var ce *session.ClientError
		switch {
		case errors.As(err, &ce):
			log.Info("login refused by the host", append(attrs, "err", err)...)
			return c.refuse("the host refused the account: "+err.Error(), ce.Msg)
		case err != nil:
			log.Error("login refused: the host's account rules failed", append(attrs, "err", err)...)
			return c.refuse("the host's account rules failed", "access denied")
		}
	}
	if !s.reserveConn(c) {
		log.Warn("login refused: too many conns from this peer (MaxConnsPerPeer)", attrs...)
		return c.refuse("too many conns from this peer (MaxConnsPerPeer)", "too many connections from this node")
	}
	if d.Caller.Key.IsZero() {
		d.Caller.Key = c.peer.Key
	}
	c.request = req
	c.decision = d
	c.identity = Identity{Identity: d.Caller, Addr: c.peer.Addr, User: req.User}
	return nil
}

// lookupAccount returns the local account name, nil when the host has no
// such account, or an error when the host could not answer (a failing NSS
// source, no processes or files left): then nothing about the name is
// known, and the caller refuses rather than guess.
func lookupAccount(name string) (*session.User, error) {
	u, err := session.LookupUser(name)
	if errors.Is(err, session.ErrUnknownUser) {
		return nil, nil
	}
	return u, err
}

// localAccount returns the conn's local account, as forwarding and the
// agent act as it: only the account whose uid was looked up when the login
// was decided (see authNone), so what the policy judged root or not is what
// runs.
func (c *serverConn) localAccount() (*session.User, error) {
	u, err := session.LookupUser(c.decision.LocalUser)
	if err != nil {
		return nil, err
	}
	if u.Uid != c.localUID {
		return nil, fmt.Errorf("the account %q has uid %s now, %q at login", u.Name, u.Uid, c.localUID)
	}
	return u, nil
}

// takeNotice returns what the host's account check said, once: sshd shows
// it with the conn's first interactive session.
func (c *serverConn) takeNotice() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.notice
	c.notice = ""
	return n
}

// log returns the server's logger with the conn's id and peer, the keys
// every event of the conn carries.
func (c *serverConn) log() *slog.Logger { return c.logger }

// refuse returns the auth error whose banner (msg) the client prints, and
// records why for the conn's "conn closed" event: the last refusal is why
// the handshake failed, when it does.
func (c *serverConn) refuse(why, msg string) error {
	c.mu.Lock()
	c.refusal = why
	c.mu.Unlock()
	return refusal(msg)
}

// refusal returns the auth error whose banner the client prints.
func refusal(msg string) error {
	msg = strings.TrimRight(msg, "\r\n")
	return &ssh.BannerError{Err: errors.New("refused by policy"), Message: "sshmesh: " + msg + "\r\n"}
}

// maxEnvVars bounds the variables a client may set per session.
const maxEnvVars = 64

// acceptEnv reports whether the client may set name=value for this conn's
// rule: [policy.EnvAllowed], the one environment rule, with the rule's
// acceptEnv patterns.
func (c *serverConn) acceptEnv(name, value string) bool {
	return policy.EnvAllowed(c.decision.AcceptEnv, name, value)
}
