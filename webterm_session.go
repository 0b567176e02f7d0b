package sshmesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"
)

// The web terminal's session bridge: each WebSocket the page opens
// (webterm.go serves the page and accepts it) runs as a serverConn of its
// own (serveWeb), whose one session's ssh.Channel is the WebSocket
// (webChannel) and whose keepalives are WebSocket pings (webLink).

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
	c.watch(ctx, link)

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

// SendRequest sends a ping and waits for its pong, or for the WebSocket's
// close, as an SSH keepalive waits for its reply: the conn's watchdog
// counts the intervals it goes unanswered (KeepAliveCountMax) and closes
// the link. A ping with a deadline of its own would fail with the link
// still open, and read as the link's end.
func (l webLink) SendRequest(name string, wantReply bool, payload []byte) (bool, []byte, error) {
	if err := l.ch.ws.Ping(context.Background()); err != nil {
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
