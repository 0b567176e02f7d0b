package sshmesh_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/policy"
)

// The web terminal's server side over loopback, with the same fixed
// address → key table as the SSH tests and a WebSocket client in Go:
// the checks every request passes, and a session's path (handler, window
// changes, exit status, revocation). cmd/sshmesh's webterm e2e tests run
// the page itself in Chromium over the mesh.

// webServer serves srv's web terminal on loopback.
type webServer struct {
	srv  *sshmesh.Server
	addr string // host:port
}

func startWebServer(t *testing.T, srv *sshmesh.Server) *webServer {
	t.Helper()
	if srv.Policy == nil {
		srv.Policy = allowPolicy()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	keys := addrTable{clientAddr: newKey(t), client2Addr: newKey(t)}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeWebTerminal(sshmesh.NewListener(ln, keys, nil)) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-errc; !errors.Is(err, sshmesh.ErrServerClosed) {
			t.Errorf("ServeWebTerminal returned %v, want ErrServerClosed", err)
		}
	})
	return &webServer{srv: srv, addr: ln.Addr().String()}
}

// client returns an HTTP client whose conns come from src.
func webClient(src netip.Addr) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 10 * time.Second}
}

var tokenRE = regexp.MustCompile(`data-token="([A-Za-z0-9_-]+)"`)

// page fetches the page from src and returns its status, body and token.
func (ws *webServer) page(t *testing.T, src netip.Addr, host string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+ws.addr+"/", nil)
	if host != "" {
		req.Host = host
	}
	resp, err := webClient(src).Do(req)
	if err != nil {
		return 0, err.Error(), ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	tok := ""
	if m := tokenRE.FindSubmatch(b); m != nil {
		tok = string(m[1])
	}
	return resp.StatusCode, string(b), tok
}

// dial opens the terminal's WebSocket from src with origin and token.
func (ws *webServer) dial(t *testing.T, src netip.Addr, origin, user, token string) (*websocket.Conn, int, error) {
	t.Helper()
	q := url.Values{"user": {user}, "token": {token}, "cols": {"100"}, "rows": {"30"}}
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+ws.addr+"/ws?"+q.Encode(), &websocket.DialOptions{HTTPClient: webClient(src), HTTPHeader: h})
	code := 0
	if resp != nil {
		code = resp.StatusCode
	}
	if c != nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, code, err
}

// webEvent is a message from the server: output, or a control message.
type webEvent struct {
	Output string
	T      string
	Text   string
	Status *int
	User   string
	Local  string `json:"localUser"`
}

func readEvent(t *testing.T, c *websocket.Conn) (webEvent, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		return webEvent{}, err
	}
	if typ == websocket.MessageBinary {
		return webEvent{Output: string(b)}, nil
	}
	var e webEvent
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("control message %q: %v", b, err)
	}
	return e, nil
}

// readUntil reads events until one of type typ, returning the output seen.
func readUntil(t *testing.T, c *websocket.Conn, typ string) (webEvent, string) {
	t.Helper()
	var out strings.Builder
	for {
		e, err := readEvent(t, c)
		if err != nil {
			t.Fatalf("waiting for %q (output so far %q): %v", typ, out.String(), err)
		}
		out.WriteString(e.Output)
		if e.T == typ {
			return e, out.String()
		}
	}
}

// TestWebTerminalSessionPath: a web terminal runs the Server's Handler
// with a PTY of the page's size, gets its window changes and input, and
// its exit status reaches the page; Conns lists it while it runs.
func TestWebTerminalSessionPath(t *testing.T) {
	windows := make(chan sshmesh.Window, 4)
	srv := &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		p, ok := s.Pty()
		fmt.Fprintf(s, "hello %s as %s pty=%v %s %dx%d\r\n", s.Identity().User, s.LocalUser(), ok, p.Term, p.Window.Cols, p.Window.Rows)
		windows <- <-s.WindowChanges()
		buf := make([]byte, 64)
		n, _ := s.Read(buf)
		fmt.Fprintf(s, "got %q\r\n", buf[:n])
		s.Exit(5)
	})}
	ws := startWebServer(t, srv)
	code, _, tok := ws.page(t, clientAddr, "")
	if code != 200 || tok == "" {
		t.Fatalf("page: %d, token %q", code, tok)
	}
	c, _, err := ws.dial(t, clientAddr, "http://"+ws.addr, "ann", tok)
	if err != nil {
		t.Fatal(err)
	}
	open, _ := readUntil(t, c, "open")
	if open.User != "ann" || open.Local != "ann" {
		t.Errorf("open message %+v", open)
	}
	if e, err := readEvent(t, c); err != nil || e.Output != "hello ann as ann pty=true xterm-256color 100x30\r\n" {
		t.Errorf("first output %+v, %v", e, err)
	}
	if conns := srv.Conns(); len(conns) != 1 || conns[0].Identity.User != "ann" || len(conns[0].Sessions) != 1 || !conns[0].Sessions[0].Pty {
		t.Errorf("Conns() = %+v", conns)
	}
	ctx := context.Background()
	c.Write(ctx, websocket.MessageText, []byte(`{"t":"resize","cols":120,"rows":40}`))
	if w := <-windows; w.Cols != 120 || w.Rows != 40 {
		t.Errorf("window change %+v", w)
	}
	c.Write(ctx, websocket.MessageBinary, []byte("ü\r"))
	exit, out := readUntil(t, c, "exit")
	if out != "got \"ü\\r\"\r\n" || exit.Status == nil || *exit.Status != 5 {
		t.Errorf("output %q, exit %+v", out, exit)
	}
}

// TestWebTerminalRevoked: a policy change that refuses the login ends
// the web terminal with the reason on its screen, as an SSH session's.
func TestWebTerminalRevoked(t *testing.T) {
	srv := &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		fmt.Fprintf(s, "ready\r\n")
		<-s.Done()
	})}
	ws := startWebServer(t, srv)
	_, _, tok := ws.page(t, clientAddr, "")
	c, _, err := ws.dial(t, clientAddr, "http://"+ws.addr, "ann", tok)
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, c, "open")
	if e, err := readEvent(t, c); err != nil || e.Output != "ready\r\n" {
		t.Fatalf("first output %+v, %v", e, err)
	}
	if n := srv.SetPolicy(policy.Func(func(context.Context, policy.Request) (policy.Decision, error) {
		return policy.Decision{Action: policy.Reject}, nil
	})); n != 1 {
		t.Errorf("SetPolicy closed %d conns, want 1", n)
	}
	var out strings.Builder
	for {
		e, err := readEvent(t, c)
		if err != nil {
			break
		}
		out.WriteString(e.Output)
	}
	if !strings.Contains(out.String(), "access revoked by policy change") {
		t.Errorf("the terminal ended showing %q", out.String())
	}
}

// TestWebTerminalRefusesBrowserAttacks: a WebSocket from another origin,
// without Origin, without or with a forged or another visitor's token,
// a request for another Host, and a conn whose peer is unknown get no
// terminal.
func TestWebTerminalRefusesBrowserAttacks(t *testing.T) {
	started := make(chan struct{}, 10)
	srv := &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { started <- struct{}{} })}
	ws := startWebServer(t, srv)
	_, _, tok := ws.page(t, clientAddr, "")
	_, _, tok2 := ws.page(t, client2Addr, "")
	self := "http://" + ws.addr
	for _, tc := range []struct {
		name, origin, token string
		want                int
	}{
		{"another origin", "http://127.0.0.1:1", tok, 403},
		{"an origin naming the host over https", "https://" + ws.addr, tok, 403},
		{"no origin", "", tok, 403},
		{"no token", self, "", 403},
		{"forged token", self, strings.Repeat("A", len(tok)), 403},
		{"another visitor's token", self, tok2, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, code, err := ws.dial(t, clientAddr, tc.origin, "ann", tc.token)
			if err == nil || c != nil || code != tc.want {
				t.Errorf("dial: conn %v, HTTP %d, err %v; want HTTP %d and no conn", c != nil, code, err, tc.want)
			}
		})
	}
	for host, want := range map[string]int{"": 200, "rebind.example": 421, "localhost" + ws.addr[strings.LastIndex(ws.addr, ":"):]: 421, "127.0.0.1": 421} {
		if code, body, _ := ws.page(t, clientAddr, host); code != want {
			t.Errorf("Host %q: HTTP %d (%.80s), want %d", host, code, body, want)
		}
	}
	if code, _, _ := ws.page(t, netip.MustParseAddr("127.0.0.3"), ""); code != 0 {
		t.Errorf("a conn from an unknown peer got HTTP %d, want no answer", code)
	}
	select {
	case <-started:
		t.Error("a session started")
	default:
	}
}

// TestWebTerminalRefusesConnWithoutPeer: a listener whose conns do not
// know their mesh peer serves no page and no terminal.
func TestWebTerminalRefusesConnWithoutPeer(t *testing.T) {
	srv := &sshmesh.Server{Policy: allowPolicy()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeWebTerminal(ln)
	t.Cleanup(func() { srv.Close() })
	resp, err := webClient(clientAddr).Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("HTTP %d, want 403", resp.StatusCode)
	}
}

// TestWebTerminalRefusedLogin: the rule's message reaches the page and
// no session starts.
func TestWebTerminalRefusedLogin(t *testing.T) {
	ws := startWebServer(t, &sshmesh.Server{})
	_, _, tok := ws.page(t, clientAddr, "")
	c, _, err := ws.dial(t, clientAddr, "http://"+ws.addr, "nobody", tok)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := readUntil(t, c, "refused")
	if e.Text != "nobody may not log in here" {
		t.Errorf("refusal %q", e.Text)
	}
}

// blockingChecker holds every check until its test ends, telling the page.
type blockingChecker struct{ done chan struct{} }

func (blockingChecker) CheckTimeout() time.Duration { return time.Minute }

func (c blockingChecker) Check(ctx context.Context, r *sshmesh.CheckRequest) error {
	r.SendBanner("Approve this login at http://example.invalid/check/x\r\n")
	select {
	case <-c.done:
	case <-ctx.Done():
	}
	return &sshmesh.CheckRefusal{Message: "not approved"}
}

// TestWebTerminalStartupLimit: logins being decided (here, waiting for a
// check) hold a startup slot as an ssh conn's do, so one page cannot
// hold more of them than MaxStartupsPerPeer.
func TestWebTerminalStartupLimit(t *testing.T) {
	checker := blockingChecker{done: make(chan struct{})}
	defer close(checker.done)
	pol := policy.Func(func(ctx context.Context, r policy.Request) (policy.Decision, error) {
		return policy.Decision{Action: policy.Check, LocalUser: r.User, Rule: "ssh[0]"}, nil
	})
	ws := startWebServer(t, &sshmesh.Server{Policy: pol, Checker: checker, MaxStartupsPerPeer: 2})
	_, _, tok := ws.page(t, clientAddr, "")
	for i := range 2 {
		c, _, err := ws.dial(t, clientAddr, "http://"+ws.addr, "ann", tok)
		if err != nil {
			t.Fatal(err)
		}
		if e, _ := readUntil(t, c, "banner"); !strings.Contains(e.Text, "Approve this login") {
			t.Errorf("login %d: banner %q", i, e.Text)
		}
	}
	c, _, err := ws.dial(t, clientAddr, "http://"+ws.addr, "ann", tok)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := readUntil(t, c, "refused"); !strings.Contains(e.Text, "too many logins waiting") {
		t.Errorf("third login: %q", e.Text)
	}
	// Another peer has slots of its own.
	_, _, tok2 := ws.page(t, client2Addr, "")
	c2, _, err := ws.dial(t, client2Addr, "http://"+ws.addr, "ann", tok2)
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, c2, "banner")
}

// TestWebTerminalSessionDuration: the rule's sessionDuration ends a web
// terminal as it ends an ssh session, with the reason on its screen.
func TestWebTerminalSessionDuration(t *testing.T) {
	pol := policy.Func(func(ctx context.Context, r policy.Request) (policy.Decision, error) {
		return policy.Decision{Action: policy.Accept, LocalUser: r.User, Rule: "ssh[0]", SessionDuration: 300 * time.Millisecond}, nil
	})
	srv := &sshmesh.Server{Policy: pol, Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { <-s.Done() })}
	ws := startWebServer(t, srv)
	_, _, tok := ws.page(t, clientAddr, "")
	c, _, err := ws.dial(t, clientAddr, "http://"+ws.addr, "ann", tok)
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, c, "open")
	var out strings.Builder
	for {
		e, err := readEvent(t, c)
		if err != nil {
			break
		}
		out.WriteString(e.Output)
	}
	if !strings.Contains(out.String(), "session ended: the rule allows sessions of at most 300ms") {
		t.Errorf("the terminal ended showing %q", out.String())
	}
}

// TestWebTerminalShutdown: Shutdown waits for an open web terminal as for
// an ssh session, and its deadline closes it.
func TestWebTerminalShutdown(t *testing.T) {
	srv := &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { <-s.Done() })}
	ws := startWebServer(t, srv)
	_, _, tok := ws.page(t, clientAddr, "")
	c, _, err := ws.dial(t, clientAddr, "http://"+ws.addr, "ann", tok)
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, c, "open")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a terminal open: %v, want its deadline", err)
	}
	if _, err := readEvent(t, c); err == nil {
		t.Error("the terminal is still open after Shutdown's deadline")
	}
}
