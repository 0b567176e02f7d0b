package sshmesh

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/internal/webtermui"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

// The web terminal: a page on the node's own mesh address that opens a
// login shell in the browser (xterm.js over a WebSocket). The visitor is
// the mesh peer of the HTTP conn, exactly as the caller of an SSH conn is,
// and the terminal takes the same path as an SSH session: a serverConn
// whose login is decided by decide (policy, check, account, limits), then
// runSession with the Server's Handler on a Channel that carries the
// WebSocket (webChannel), so recording, the audit log (every event of the
// conn with via=web), revocation, expiry and sessionDuration are the ones
// of SSH. Package-level notes on the browser as an attacker are in
// SECURITY.md; in short, a WebSocket is accepted only when
//
//   - the conn's peer resolves (as Serve, a conn without one is refused);
//   - Host is the mesh address the conn reached (DNS rebinding);
//   - Origin is exactly http://Host (another page in the same browser);
//   - it carries the page's token: an HMAC, under a key that lives and
//     dies with the Server, of the visitor's key and an expiry a few
//     minutes on.

// WebTerminalTokenLifetime is how long a page's token opens terminals:
// a page left open longer is reloaded (the page says so).
const WebTerminalTokenLifetime = 10 * time.Minute

// ServeWebTerminal serves the web terminal on l until l fails or the
// server shuts down (then it returns [ErrServerClosed]). l is a mesh
// listener, as for [Server.Serve]: a *netstack.Node's listener (for
// example node.Listen("tcp", ":8022")) or a [Listener]; a conn whose peer
// is not known is refused. The page at / shows the visitor who they are
// and the login names the policy lets them use here (a [policy.LoginNamer]
// policy lists them; any name can be typed), and opens a terminal for the
// one picked. Each terminal is a conn of its own in [Server.Conns], the
// audit log and revocation, with the login decided as for SSH; a check
// rule's message (the approval link) shows in the page and the terminal
// opens once approved.
//
// Call it beside Serve, with the same Server; Shutdown and Close end it.
func (s *Server) ServeWebTerminal(l net.Listener) error {
	if s.currentPolicy() == nil {
		return errors.New("sshmesh: Server.Policy is nil")
	}
	if !s.trackListener(l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(l, false)
	watchDone := make(chan struct{})
	defer close(watchDone)
	go s.watchPeers(watchDone)
	hs := &http.Server{
		Handler: s.webHandler(),
		// No read or write timeout: they would cut the WebSocket. Idle
		// and header timeouts bound everything before it.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, webConnKey{}, c)
		},
	}
	err := hs.Serve(l)
	// Pages and idle keep-alive conns end with the listener; terminals
	// (hijacked, so not the http.Server's) are the Server's conns, which
	// Shutdown and Close end.
	hs.Close()
	if s.isClosed() {
		return ErrServerClosed
	}
	return err
}

// webConnKey is the request context key of the HTTP conn.
type webConnKey struct{}

// webHandler routes the page, its assets and the WebSocket, behind the
// checks every request passes (webGuard).
func (s *Server) webHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.webPage)
	mux.HandleFunc("GET /assets/{name}", webAsset)
	mux.HandleFunc("GET /ws", s.webSocket)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	})
	return s.webGuard(mux)
}

// webPeer returns the mesh peer of the request's conn.
func webPeer(r *http.Request) (Peer, net.Conn, bool) {
	c, _ := r.Context().Value(webConnKey{}).(net.Conn)
	if c == nil {
		return Peer{}, nil, false
	}
	p, ok := PeerOf(c)
	return p, c, ok
}

// webGuard refuses a request whose conn has no mesh peer or whose Host is
// not the mesh address the conn reached, and sets the security headers.
func (s *Server) webGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", webCSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		peer, _, ok := webPeer(r)
		if !ok {
			s.logger().Warn("web terminal: refused a request without a mesh peer", "addr", r.RemoteAddr)
			http.Error(w, "this page is served to mesh peers only", http.StatusForbidden)
			return
		}
		if !HostIsAddr(r.Host, peer.Local) {
			s.logger().Warn("web terminal: refused a request for another host", "peer", peer.Key.String(), "host", r.Host)
			http.Error(w, "wrong host: open this page at the node's mesh address", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// webCSP lets the page load only its own scripts and styles and connect
// only to its own origin. Styles allow 'unsafe-inline' because xterm.js
// sizes and colours its rows with style attributes and elements; scripts
// do not.
const webCSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; font-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// webAsset serves one embedded file by name.
func webAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := webtermui.Asset(r.PathValue("name"))
	if !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", a.ContentType)
	w.Header().Set("Cache-Control", "private, max-age=3600")
	w.Write(a.Data)
}

// webPage renders the page: who the visitor is, the logins it may use
// here, and a token for its WebSocket.
func (s *Server) webPage(w http.ResponseWriter, r *http.Request) {
	peer, _, _ := webPeer(r)
	pol := s.currentPolicy()
	visitor := policy.Identity{Key: peer.Key}
	node := policy.Identity{Key: peer.Self}
	if id, ok := pol.(policy.Identifier); ok {
		visitor, _ = id.Node(peer.Key)
		if !peer.Self.IsZero() {
			node, _ = id.Node(peer.Self)
		}
	}
	nodeName := node.Name()
	if peer.Self.IsZero() {
		nodeName = peer.Local.Addr().String()
	}
	data := webtermui.PageData{
		Visitor:     visitor.Name(),
		VisitorAddr: peer.Addr.Addr().String(),
		Owner:       visitor.Owner,
		Tags:        strings.Join(visitor.Tags, " "),
		Node:        nodeName,
		NodeAddr:    peer.Local.Addr().String(),
		Token:       s.webToken(peer.Key, time.Now()),
		Logins:      s.webLogins(r.Context(), peer),
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := webtermui.Page().Execute(w, data); err != nil {
		s.logger().Warn("web terminal: page not rendered", "err", err)
	}
}

// webLogins asks the policy which of the login names it spells out for
// the peer it would let in here, and how.
func (s *Server) webLogins(ctx context.Context, peer Peer) []webtermui.Login {
	pol := s.currentPolicy()
	namer, ok := pol.(policy.LoginNamer)
	if !ok || peer.Self.IsZero() {
		return nil
	}
	var out []webtermui.Login
	for _, name := range namer.LoginNames(peer.Key, peer.Self) {
		req := policy.Request{Key: peer.Key, Addr: peer.Addr, Self: peer.Self, User: name}
		acct, err := lookupAccount(name)
		if err != nil {
			continue
		}
		req.RootUser = name == "root" || acct != nil && acct.Uid == "0"
		d, err := pol.Evaluate(ctx, req)
		if err != nil || !d.Allowed() || d.LocalUser == "" {
			continue
		}
		out = append(out, webtermui.Login{Name: name, LocalUser: d.LocalUser, Check: d.Action == policy.Check, Recorded: d.Record})
		if len(out) == 32 {
			break
		}
	}
	return out
}

// The WebSocket protocol. Browser to server: binary messages are the
// terminal's input; text messages are JSON {"t":"resize","cols":N,"rows":N}.
// Server to browser: binary messages are the terminal's output; text
// messages are JSON webMsg.

// webMsg is a control message to the page.
type webMsg struct {
	T         string `json:"t"`                   // banner, refused, open, exit
	Text      string `json:"text,omitempty"`      // banner and refused
	User      string `json:"user,omitempty"`      // open: the login name
	LocalUser string `json:"localUser,omitempty"` // open
	Recorded  bool   `json:"recorded,omitempty"`  // open
	Session   string `json:"session,omitempty"`   // open: the session id
	Status    *int   `json:"status,omitempty"`    // exit
	Signal    string `json:"signal,omitempty"`    // exit
}

// webSocket checks the Origin and the token, then serves one terminal.
func (s *Server) webSocket(w http.ResponseWriter, r *http.Request) {
	peer, nc, _ := webPeer(r)
	log := s.logger().With("peer", peer.Key.String(), "via", "web")
	if origin := r.Header.Get("Origin"); origin != "http://"+r.Host {
		log.Warn("web terminal: refused a WebSocket from another origin", "origin", origin, "host", r.Host)
		http.Error(w, "cross-origin WebSocket refused", http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	if !s.webTokenValid(q.Get("token"), peer.Key, time.Now()) {
		log.Warn("web terminal: refused a WebSocket without a valid page token")
		http.Error(w, "the page's token is missing, expired or not yours: reload the page", http.StatusForbidden)
		return
	}
	user := q.Get("user")
	win := Window{Cols: webDim(q.Get("cols"), 80), Rows: webDim(q.Get("rows"), 24)}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		log.Warn("web terminal: WebSocket not accepted", "err", err)
		return
	}
	nc.SetDeadline(time.Time{})
	ws.SetReadLimit(1 << 20)
	s.serveWeb(ws, nc, peer, user, win)
}

// webDim parses a terminal dimension, def when absent or absurd.
func webDim(v string, def uint32) uint32 {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == 0 || n > 1000 {
		return def
	}
	return uint32(n)
}

// serveWeb runs one web terminal as a conn of its own: the login decided
// as for SSH, then one session with a PTY on the WebSocket.
func (s *Server) serveWeb(ws *websocket.Conn, nc net.Conn, peer Peer, user string, win Window) {
	c := &serverConn{srv: s, nc: webNetConn{nc}, peer: peer, id: newID(), accepted: time.Now()}
	c.logger = s.logger().With("conn", c.id, "peer", peer.Key.String(), "via", "web")
	c.lastActive.Store(c.accepted.UnixNano())
	ch := newWebChannel(ws, func() { c.heard.Store(time.Now().UnixNano()) })
	defer nc.Close()
	if why := s.addWebConn(c); why != "" {
		c.log().Warn("web terminal refused", "addr", peer.Addr.String(), "reason", why)
		ch.send(webMsg{T: "refused", Text: why})
		ch.Close()
		return
	}
	defer s.forget(c)
	s.logConnAccepted(c)
	go ch.readLoop()

	banner := func(msg string) error { return ch.send(webMsg{T: "banner", Text: strings.TrimRight(msg, "\r\n")}) }
	if err := c.decide(user, banner); err != nil {
		msg := "access denied"
		var be *ssh.BannerError
		if errors.As(err, &be) {
			msg = strings.TrimSpace(strings.TrimPrefix(be.Message, "sshmesh: "))
		}
		ch.send(webMsg{T: "refused", Text: msg})
		ch.Close()
		c.mu.Lock()
		why := c.refusal
		c.mu.Unlock()
		c.log().Info("conn closed", "addr", peer.Addr.String(), "reason", "login refused: "+why)
		return
	}
	s.authenticated(c)
	link := webLink{ch}
	c.mu.Lock()
	c.link = link
	c.mu.Unlock()
	if !c.decision.Expires.IsZero() {
		c.expires.Store(c.decision.Expires.UnixNano())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.watch(ctx, link)

	if w, ok := ch.latestWindow(); ok {
		win = w
	}
	if !c.openSession() {
		ch.Close()
		return
	}
	ch.send(webMsg{T: "open", User: c.identity.User, LocalUser: c.decision.LocalUser, Recorded: c.decision.Record, Session: fmt.Sprintf("%s-%d", c.id, c.sessionSeq.Load()+1)})
	c.runSession(ctx, ch, ch.requests(win))
	c.closeSession()
	c.setCloseReason("client disconnected")
	cancel()
	c.fwd.Close()
	c.mu.Lock()
	reason := c.closeReason
	c.mu.Unlock()
	c.log().Info("conn closed", "addr", peer.Addr.String(),
		"user", c.identity.User, "local_user", c.decision.LocalUser, "reason", reason)
}

// addWebConn counts c among the server's conns (Shutdown waits for it,
// Close closes it) with a startup slot, as an SSH conn until its login is
// decided (MaxStartups, MaxStartupsPerPeer: a page cannot hold more
// logins waiting for a check than an ssh client can). It returns why not
// when the server is closing or the slots are taken; a web terminal does
// not queue for a slot.
func (s *Server) addWebConn(c *serverConn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "the server is shutting down"
	}
	if s.perPeer == nil {
		s.perPeer = make(map[[32]byte]int)
		s.conns = make(map[*serverConn]struct{})
		s.queued = make(map[[32]byte][]*serverConn)
	}
	if !s.canStart(c.peer.Key) {
		return "too many logins waiting on this server (MaxStartups); try again later"
	}
	c.startup = true
	s.startups++
	s.perPeer[c.peer.Key]++
	s.conns[c] = struct{}{}
	return ""
}

// webNetConn is the HTTP conn under a web terminal, as serverConn.nc:
// closing it ends the terminal. Deadlines are the ssh handshake's (a
// check lifts and restores them); the WebSocket has none, so they are
// ignored.
type webNetConn struct{ net.Conn }

func (webNetConn) SetDeadline(time.Time) error { return nil }

// webLink is a web terminal's WebSocket as the conn's connLink: a
// keepalive is a WebSocket ping.
type webLink struct{ ch *webChannel }

func (l webLink) SendRequest(name string, wantReply bool, payload []byte) (bool, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.ch.ws.Ping(ctx); err != nil {
		return false, nil, err
	}
	return false, nil, nil // as sshmesh's keepalives: any reply proves the client alive
}

func (l webLink) Close() error { return l.ch.Close() }

// webChannel is a web terminal's WebSocket as the ssh.Channel of its one
// session: the terminal's input and output both ways, window changes as
// window-change requests, the exit status as a closing message.
type webChannel struct {
	ws     *websocket.Conn
	in     *io.PipeReader
	inW    *io.PipeWriter
	winMu  sync.Mutex
	win    *Window       // the latest size the page sent, until requests takes over
	wins   chan Window   // the page's sizes once the session runs
	gone   chan struct{} // closed when the WebSocket's reading ends
	heard  func()        // called for every message from the page (keepalives)
	closed sync.Once
}

func newWebChannel(ws *websocket.Conn, heard func()) *webChannel {
	r, w := io.Pipe()
	return &webChannel{ws: ws, in: r, inW: w, gone: make(chan struct{}), heard: heard}
}

// send writes a control message to the page.
func (c *webChannel) send(m webMsg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// readLoop reads the page's messages until the WebSocket ends: input into
// the pipe Read reads, sizes to requests.
func (c *webChannel) readLoop() {
	defer close(c.gone)
	defer c.inW.CloseWithError(io.EOF)
	for {
		typ, b, err := c.ws.Read(context.Background())
		if err != nil {
			return
		}
		c.heard()
		if typ == websocket.MessageBinary {
			if _, err := c.inW.Write(b); err != nil {
				return
			}
			continue
		}
		var m struct {
			T          string
			Cols, Rows uint32
		}
		if json.Unmarshal(b, &m) != nil || m.T != "resize" || m.Cols == 0 || m.Rows == 0 || m.Cols > 1000 || m.Rows > 1000 {
			continue
		}
		w := Window{Cols: m.Cols, Rows: m.Rows}
		c.winMu.Lock()
		if c.wins != nil {
			latest(c.wins, w)
		} else {
			c.win = &w
		}
		c.winMu.Unlock()
	}
}

// latestWindow returns the last size the page sent before the session.
func (c *webChannel) latestWindow() (Window, bool) {
	c.winMu.Lock()
	defer c.winMu.Unlock()
	if c.win == nil {
		return Window{}, false
	}
	return *c.win, true
}

// webModes are the web terminal's terminal modes (RFC 4254 §8): IUTF8, for
// xterm.js reads and writes UTF-8 only (the line discipline then erases
// whole characters, and a login without a locale gets a UTF-8 one).
var webModes = string(ssh.Marshal(struct {
	Op  uint8
	Arg uint32
	End uint8
}{ssh.IUTF8, 1, 0}))

// requests returns the session's requests, as an SSH client with a
// terminal sends them: pty-req (TERM xterm-256color, the page's size),
// shell, then a window-change per resize, until the WebSocket ends.
func (c *webChannel) requests(win Window) <-chan *ssh.Request {
	reqs := make(chan *ssh.Request, 2)
	pty := struct {
		Term                      string
		Cols, Rows, Width, Height uint32
		Modes                     string
	}{"xterm-256color", win.Cols, win.Rows, 0, 0, webModes}
	reqs <- &ssh.Request{Type: "pty-req", Payload: ssh.Marshal(&pty)}
	reqs <- &ssh.Request{Type: "shell"}
	wins := make(chan Window, 1)
	c.winMu.Lock()
	c.wins = wins
	c.winMu.Unlock()
	go func() {
		defer close(reqs)
		for {
			select {
			case w := <-wins:
				wc := struct{ Cols, Rows, Width, Height uint32 }{w.Cols, w.Rows, 0, 0}
				select {
				case reqs <- &ssh.Request{Type: "window-change", Payload: ssh.Marshal(&wc)}:
				case <-c.gone:
					return
				}
			case <-c.gone:
				return
			}
		}
	}()
	return reqs
}

// Read reads the terminal's input.
func (c *webChannel) Read(p []byte) (int, error) { return c.in.Read(p) }

// Write sends the terminal's output.
func (c *webChannel) Write(p []byte) (int, error) {
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseWrite does nothing: the exit message ends the output.
func (c *webChannel) CloseWrite() error { return nil }

// Close ends the WebSocket with a close handshake, in the background (a
// page that does not answer gets 5 s, then its conn is closed).
func (c *webChannel) Close() error {
	c.closed.Do(func() {
		go c.ws.Close(websocket.StatusNormalClosure, "")
	})
	return nil
}

// SendRequest turns the session's exit-status and exit-signal into the
// page's exit message; other requests are refused.
func (c *webChannel) SendRequest(name string, wantReply bool, payload []byte) (bool, error) {
	switch name {
	case "exit-status":
		var st struct{ Status uint32 }
		if err := ssh.Unmarshal(payload, &st); err != nil {
			return false, err
		}
		code := int(st.Status)
		return true, c.send(webMsg{T: "exit", Status: &code})
	case "exit-signal":
		var sig struct{ Signal string }
		if err := ssh.Unmarshal(payload, &sig); err != nil {
			return false, err
		}
		return true, c.send(webMsg{T: "exit", Signal: sig.Signal})
	}
	return false, nil
}

// Stderr is the terminal too: a PTY session's stderr is its output.
func (c *webChannel) Stderr() io.ReadWriter { return webStderr{c} }

type webStderr struct{ c *webChannel }

func (e webStderr) Read([]byte) (int, error)    { return 0, io.EOF }
func (e webStderr) Write(p []byte) (int, error) { return e.c.Write(p) }

// webToken returns the page token for the visitor key at now: the expiry
// and an HMAC of it and the key, under the server's web key.
func (s *Server) webToken(key meshkey.Public, now time.Time) string {
	var b [8 + 16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.Add(WebTerminalTokenLifetime).Unix()))
	copy(b[8:], s.webMAC(key, b[:8]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// webTokenValid reports whether tok is a live token of the visitor key.
func (s *Server) webTokenValid(tok string, key meshkey.Public, now time.Time) bool {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != 24 {
		return false
	}
	if now.Unix() >= int64(binary.BigEndian.Uint64(b[:8])) {
		return false
	}
	return hmac.Equal(b[8:], s.webMAC(key, b[:8]))
}

// webMAC is the first 128 bits of HMAC-SHA256(web key, purpose, key, exp).
func (s *Server) webMAC(key meshkey.Public, exp []byte) []byte {
	s.webKeyOnce.Do(func() {
		if _, err := rand.Read(s.webKey[:]); err != nil {
			panic("sshmesh: no randomness for the web terminal's key: " + err.Error())
		}
	})
	m := hmac.New(sha256.New, s.webKey[:])
	m.Write([]byte("sshmesh web terminal page token\x00"))
	m.Write(key[:])
	m.Write(exp)
	return m.Sum(nil)[:16]
}
