package sshmesh

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

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
