package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/sshmesh/sshmesh/internal/browsertest"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// The web terminal end to end: `sshmesh serve --web-port` with a policy,
// headless Chromium on the mesh through `sshmesh proxy`, real logins as
// root with a PTY.

const webURL = "http://100.64.0.1:8022/"

// webWorld is a server with the web terminal, and the wg-quick files of
// alice's browser node and bob's.
type webWorld struct {
	dir, aliceConf, bobConf, recordDir string
	sshConf                            string // alice's other node, for the stock ssh client
	shots                              string // where screenshots go: $SSHMESH_SCREENSHOTS, else dir
	serveLog                           *sshmeshtest.Buffer
}

func startWebWorld(t testing.TB) *webWorld {
	t.Helper()
	sshmeshtest.NeedRoot(t) // logs in as root and nobody
	sshmeshtest.NeedBinary(t, "chromium", "chromium")
	m := sshmeshtest.NewMesh(t, 4)
	for _, n := range m.Nodes {
		n.Node.Close() // the processes below run these nodes
	}
	srvN, alice, bob, aliceSSH := m.Nodes[0], m.Nodes[1], m.Nodes[2], m.Nodes[3]
	dir := t.TempDir()
	w := &webWorld{dir: dir,
		sshConf:   aliceSSH.WriteWGQuick(t, filepath.Join(dir, "alice-ssh.conf")),
		aliceConf: alice.WriteWGQuick(t, filepath.Join(dir, "alice.conf")),
		bobConf:   bob.WriteWGQuick(t, filepath.Join(dir, "bob.conf")),
		recordDir: filepath.Join(dir, "casts"),
		serveLog:  &sshmeshtest.Buffer{},
		shots:     os.Getenv("SSHMESH_SCREENSHOTS"),
	}
	if w.shots == "" {
		w.shots = dir
	}
	pol := fmt.Sprintf(`{
  "nodes": {
    "srv": {"key": %q, "tags": ["tag:server"]},
    "alice-web": {"key": %q, "owner": "alice@example.com"},
    "bob-web": {"key": %q, "owner": "bob@example.com"},
    "alice-ssh": {"key": %q, "owner": "alice@example.com"},
  },
  "tagOwners": {"tag:server": ["alice@example.com"]},
  "ssh": [
    {"action": "reject", "src": ["alice-web"], "dst": ["tag:server"], "users": ["daemon"], "message": "no daemons from the browser"},
    {"action": "accept", "src": ["alice-web"], "dst": ["tag:server"], "users": ["root"], "record": true},
    {"action": "check", "src": ["alice-web"], "dst": ["tag:server"], "users": ["nobody"], "checkPeriod": "1h", "checkProof": "mesh"},
    {"action": "accept", "src": ["alice-ssh"], "dst": ["tag:server"], "users": ["root"], "record": true},
  ],
}`, srvN.Key.Public(), alice.Key.Public(), bob.Key.Public(), aliceSSH.Key.Public())
	polPath := filepath.Join(dir, "policy.hujson")
	if err := os.WriteFile(polPath, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	serveConf := srvN.WriteWGQuick(t, filepath.Join(dir, "server.conf"))
	startServe(t, w.serveLog, nil, "--wg", serveConf, "--policy", polPath, "--state", filepath.Join(dir, "state"),
		"--web-port", "8022", "--record", w.recordDir, "--check-timeout", "2m")
	w.serveLog.WaitFor(t, "web terminal at http://100.64.0.1:8022/")
	return w
}

// webBrowser starts Chromium on the mesh as the node of conf.
func webBrowser(t testing.TB, conf string, width, height int) (context.Context, string) {
	t.Helper()
	socks, _ := startCheckProxy(t, conf)
	return browsertest.Start(t, browsertest.Options{Proxy: socks, Width: width, Height: height}), socks
}

// screenJS returns the terminal's buffer, one line per row.
const screenJS = `(() => {
  const t = window.sshmeshTerm;
  if (!t) return '';
  const b = t.buffer.active, out = [];
  for (let i = 0; i < b.length; i++) { const l = b.getLine(i); if (l) out.push(l.translateToString(true)); }
  return out.join('\n');
})()`

// webScreen returns what the terminal shows.
func webScreen(t *testing.T, bctx context.Context) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](screenJS))
	if err != nil {
		t.Fatalf("read the terminal: %v", err)
	}
	return s
}

// webWaitScreen waits up to 30 s for the terminal to show a match of re,
// and returns the match's groups.
func webWaitScreen(t *testing.T, bctx context.Context, re *regexp.Regexp) []string {
	t.Helper()
	var s string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		s = webScreen(t, bctx)
		if m := re.FindStringSubmatch(s); m != nil {
			return m
		}
	}
	t.Fatalf("the terminal did not show %v within 30 s; it shows:\n%s", re, s)
	return nil
}

// webState waits up to 30 s for the page's data-state to be want.
func webState(t *testing.T, bctx context.Context, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.state`))
		cancel()
		if err != nil {
			t.Fatalf("page state: %v", err)
		}
		if got = s; got == want {
			return
		}
	}
	t.Fatalf("page state %q, want %q; notice: %q", got, want, webEval(t, bctx, `document.getElementById('notice').textContent`))
}

func webEval(t *testing.T, bctx context.Context, js string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return s
}

// webDo runs browser actions with a timeout.
func webDo(t *testing.T, bctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// webType types s into the terminal as keystrokes, as a keyboard does:
// one keyDown with the key's text (Chromium then sends keypress and input
// itself) and one keyUp per character. (chromedp's SendKeys sends a
// separate char event, whose input event xterm.js takes as a second,
// uncomposed input: every key would arrive twice.)
func webType(t *testing.T, bctx context.Context, s string) {
	t.Helper()
	webDo(t, bctx, "focus the terminal", chromedp.Focus(".xterm-helper-textarea"))
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	for _, r := range s {
		down := input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyDown, Key: string(r), Text: string(r), UnmodifiedText: string(r)}
		if r == '\r' {
			down.Key, down.Code, down.WindowsVirtualKeyCode, down.NativeVirtualKeyCode = "Enter", "Enter", 13, 13
		}
		up := down
		up.Type, up.Text, up.UnmodifiedText = input.DispatchKeyEventTypeKeyUp, "", ""
		for _, ev := range []input.DispatchKeyEventParams{down, up} {
			if _, err := chromedp.Call(ctx, input.DispatchKeyEvent, ev); err != nil {
				t.Fatalf("type %q: %v", s, err)
			}
		}
	}
}

// webOpen visits the page and opens a terminal as user with a button of
// the page, or, when the page offers none, with the name typed.
func webOpen(t *testing.T, bctx context.Context, user string) {
	t.Helper()
	if code := browsertest.Visit(t, bctx, webURL); code != 200 {
		t.Fatalf("the page: HTTP %d", code)
	}
	sel := `button.login[data-user="` + user + `"]`
	n := webEval(t, bctx, `String(document.querySelectorAll('`+sel+`').length)`)
	if n == "1" {
		webDo(t, bctx, "open "+user, chromedp.Click(sel))
		return
	}
	webDo(t, bctx, "open "+user, chromedp.SendKeys("#other-user", user), chromedp.Click(`#other button`))
}

var sttySizeRE = regexp.MustCompile(`(?m)^size (\d+) (\d+)$`)

func TestWebTerminal(t *testing.T) {
	w := startWebWorld(t)
	alice, _ := webBrowser(t, w.aliceConf, 1100, 700)

	// Who the visitor is, and the logins the policy offers: root and
	// nobody (after a check), not daemon.
	if code := browsertest.Visit(t, alice, webURL); code != 200 {
		t.Fatalf("the page: HTTP %d", code)
	}
	if who := browsertest.Text(t, alice, "#who"); !strings.Contains(who, "alice-web") || !strings.Contains(who, "alice@example.com") || !strings.Contains(who, "100.64.0.2") {
		t.Errorf("#who shows %q", who)
	}
	browsertest.Screenshot(t, alice, filepath.Join(w.shots, "picker.png"))
	logins := webEval(t, alice, `[...document.querySelectorAll('button.login')].map(b => b.dataset.user).join(' ')`)
	if logins != "root nobody" {
		t.Errorf("the page offers %q, want \"root nobody\"", logins)
	}

	// A terminal as root: a command, its output, the exit status.
	webOpen(t, alice, "root")
	webState(t, alice, "open")
	if as := browsertest.Text(t, alice, "#as"); as != "as root" {
		t.Errorf("#as shows %q", as)
	}
	browsertest.Screenshot(t, alice, filepath.Join(w.shots, "open.png"))
	// The terminal is UTF-8 and says so (IUTF8): a host with no locale
	// gives the login a UTF-8 one, else the shell's line editor would read
	// ü as two Meta keys.
	webType(t, alice, "echo charmap-$(locale charmap)\r")
	webWaitScreen(t, alice, regexp.MustCompile(`(?m)^charmap-UTF-8$`))
	webType(t, alice, "echo web-$((6*7)); echo 'ütf-8 ✓'\r")
	webWaitScreen(t, alice, regexp.MustCompile(`(?m)^web-42$`))
	webWaitScreen(t, alice, regexp.MustCompile(`(?m)^ütf-8 ✓$`))

	// Text pasted (inserted into xterm.js's textarea, as the browser's
	// paste and a phone's keyboard do) reaches the shell once.
	webDo(t, alice, "focus", chromedp.Focus(".xterm-helper-textarea"))
	if _, err := chromedp.Call(alice, input.InsertText, input.InsertTextParams{Text: "echo pasted-$((2+3))"}); err != nil {
		t.Fatalf("paste: %v", err)
	}
	webType(t, alice, "\r")
	webWaitScreen(t, alice, regexp.MustCompile(`(?m)^pasted-5$`))

	// The window's size is the PTY's, and a resize reaches it.
	webType(t, alice, "echo size $(stty size)\r")
	first := webWaitScreen(t, alice, sttySizeRE)
	cols := webEval(t, alice, `String(window.sshmeshTerm.cols) + ' ' + String(window.sshmeshTerm.rows)`)
	if got := first[2] + " " + first[1]; got != cols {
		t.Errorf("stty size says cols rows %q, the terminal has %q", got, cols)
	}
	webDo(t, alice, "resize", chromedp.EmulateViewport(700, 420))
	webType(t, alice, "clear; echo size $(stty size)\r")
	var second []string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		second = webWaitScreen(t, alice, sttySizeRE)
		if second[0] != first[0] {
			break
		}
	}
	if second[0] == first[0] {
		t.Errorf("stty size still %q after the window shrank", second[0])
	}

	// A full-screen program draws.
	webType(t, alice, "clear; top -n1\r")
	webWaitScreen(t, alice, regexp.MustCompile(`(?m)^Tasks: +\d+ total`))
	webDo(t, alice, "a phone's window", chromedp.EmulateViewport(390, 700))
	webType(t, alice, "clear; echo size $(stty size)\r")
	webWaitScreen(t, alice, regexp.MustCompile(`(?m)^size \d+ [2-4]\d$`)) // 20-49 columns
	browsertest.Screenshot(t, alice, filepath.Join(w.shots, "phone.png"))
	webDo(t, alice, "resize back", chromedp.EmulateViewport(1100, 700))
	webType(t, alice, "clear; ls --color=always / | head -3; printf '\\033[1;32mgreen\\033[0m\\n'\r")
	webWaitScreen(t, alice, regexp.MustCompile(`(?m)^green$`))
	browsertest.Screenshot(t, alice, filepath.Join(w.shots, "terminal.png"))
	t.Logf("screenshots in %s", w.shots)

	webType(t, alice, "exit 3\r")
	webState(t, alice, "exited")
	if exit := webEval(t, alice, `document.body.dataset.exit`); exit != "3" {
		t.Errorf("exit shown as %q, want 3", exit)
	}

	// The audit log has the session, via web; the recording plays.
	session := ""
	for deadline := time.Now().Add(10 * time.Second); session == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, line := range strings.Split(w.serveLog.String(), "\n") {
			if strings.Contains(line, `msg="session end"`) && strings.Contains(line, "via=web") && strings.Contains(line, "exit_status=3") {
				session = regexp.MustCompile(`session=(\S+)`).FindStringSubmatch(line)[1]
			}
		}
	}
	if session == "" {
		t.Fatalf("no session end with via=web and exit_status=3 in the serve log")
	}
	for _, want := range []string{`msg="session start"`, `msg="auth decision"`, `msg="conn closed"`} {
		if !regexp.MustCompile(regexp.QuoteMeta(want) + `.*via=web`).MatchString(w.serveLog.String()) {
			t.Errorf("no %s event with via=web", want)
		}
	}
	cast := filepath.Join(w.recordDir, session+".cast")
	out, err := exec.Command(binPath, "replay", "--speed", "1000", "--idle-limit", "1ms", cast).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "web-42") {
		t.Errorf("replay %s: %v\n%s", cast, err, out)
	}
}

// TestWebTerminalRefusals: the rule's message and no terminal for a
// refused login; a visitor the policy names no login for.
func TestWebTerminalRefusals(t *testing.T) {
	w := startWebWorld(t)
	alice, _ := webBrowser(t, w.aliceConf, 0, 0)
	webOpen(t, alice, "daemon")
	webState(t, alice, "refused")
	if msg := browsertest.Text(t, alice, "#notice"); !strings.Contains(msg, "no daemons from the browser") {
		t.Errorf("the notice says %q", msg)
	}
	if n := webEval(t, alice, `String(document.querySelectorAll('.xterm').length)`); n != "0" {
		t.Errorf("%s terminals on the page after a refusal", n)
	}

	bob, _ := webBrowser(t, w.bobConf, 0, 0)
	if code := browsertest.Visit(t, bob, webURL); code != 200 {
		t.Fatalf("bob's page: HTTP %d", code)
	}
	if p := browsertest.Text(t, bob, "#picker"); !strings.Contains(p, "names no login for you") {
		t.Errorf("bob's page says %q", p)
	}
	webOpen(t, bob, "root")
	webState(t, bob, "refused")
	if msg := browsertest.Text(t, bob, "#notice"); !strings.Contains(msg, "access denied") {
		t.Errorf("bob's notice says %q", msg)
	}
	browsertest.Screenshot(t, bob, filepath.Join(w.shots, "refused.png"))
}

// TestWebTerminalCrossOrigin: a page of another origin, in the same
// browser (so with the visitor's mesh identity), cannot open the
// terminal's WebSocket, with or without a token; a request with another
// Host is refused.
func TestWebTerminalCrossOrigin(t *testing.T) {
	w := startWebWorld(t)
	alice, socks := webBrowser(t, w.aliceConf, 0, 0)

	// The attacker's page: on loopback, which Chromium reaches without the
	// proxy; its WebSockets to the mesh go through it, as alice's.
	evil := `<!doctype html><title>evil</title><script>
for (const q of ['user=root', 'user=root&token=` + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" + `']) {
  const ws = new WebSocket('ws://100.64.0.1:8022/ws?' + q);
  ws.onopen = () => { document.title += ' open'; };
  ws.onclose = () => { document.title += ' closed'; };
}
</script>`
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, evil) })}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	if code := browsertest.Visit(t, alice, "http://"+ln.Addr().String()+"/"); code != 200 {
		t.Fatalf("the evil page: HTTP %d", code)
	}
	var title string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if title = webEval(t, alice, `document.title`); strings.Count(title, "closed") == 2 {
			break
		}
	}
	if title != "evil closed closed" {
		t.Errorf("the evil page's WebSockets: %q, want both closed, never open", title)
	}
	if n := strings.Count(w.serveLog.String(), "refused a WebSocket from another origin"); n != 2 {
		t.Errorf("%d cross-origin refusals logged, want 2", n)
	}
	if strings.Contains(w.serveLog.String(), `msg="session start"`) {
		t.Error("a session started")
	}

	// Same origin, but no token from the page: refused too.
	if code := browsertest.Visit(t, alice, webURL); code != 200 {
		t.Fatalf("the page: HTTP %d", code)
	}
	webEval(t, alice, `(() => { const ws = new WebSocket('ws://' + location.host + '/ws?user=root&token=forged'); ws.onclose = () => { document.title = 'forged closed'; }; ws.onopen = () => { document.title = 'forged open'; }; return ''; })()`)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if title = webEval(t, alice, `document.title`); strings.HasPrefix(title, "forged") {
			break
		}
	}
	if title != "forged closed" {
		t.Errorf("a WebSocket with a forged token: %q", title)
	}

	// Another Host (a DNS-rebinding name for the same address): 421.
	proxyURL, _ := url.Parse("socks5://" + socks)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 30 * time.Second}
	for host, want := range map[string]int{"rebind.example": 421, "100.64.0.1:8022": 200, "100.64.0.1": 421, "127.0.0.1:8022": 421} {
		req, _ := http.NewRequest("GET", webURL, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET with Host %s: %v", host, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: HTTP %d, want %d", host, resp.StatusCode, want)
		}
	}
}

// TestWebTerminalCheck: a check rule shows its approval link in the page;
// the terminal opens only once the link is approved, in the same browser.
func TestWebTerminalCheck(t *testing.T) {
	w := startWebWorld(t)
	alice, _ := webBrowser(t, w.aliceConf, 0, 0)
	webOpen(t, alice, "nobody")
	var link string
	for deadline := time.Now().Add(30 * time.Second); link == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		link = webEval(t, alice, `(document.querySelector('#notice a') || {}).href || ''`)
	}
	if !regexp.MustCompile(`^http://100\.64\.0\.1/check/[A-Za-z0-9_-]{22}$`).MatchString(link) {
		t.Fatalf("approval link %q", link)
	}
	browsertest.Screenshot(t, alice, filepath.Join(w.shots, "check.png"))
	time.Sleep(500 * time.Millisecond)
	if st := webEval(t, alice, `document.body.dataset.state`); st != "opening" {
		t.Fatalf("before the approval the page is %q", st)
	}
	// A second tab of the same browser approves.
	tab, cancel := chromedp.NewContext(alice)
	defer cancel()
	if err := chromedp.Do(tab); err != nil { // opens the tab, on tab itself (not on a timeout's child)
		t.Fatalf("new tab: %v", err)
	}
	if code := browsertest.Visit(t, tab, link); code != 200 {
		t.Fatalf("approval page: HTTP %d", code)
	}
	webDo(t, tab, "approve", chromedp.Click("#approve"), chromedp.WaitNotPresent("#approve"))
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if webEval(t, alice, `document.body.dataset.opened || ''`) != "" {
			break
		}
	}
	if webEval(t, alice, `document.body.dataset.opened || ''`) == "" {
		t.Fatalf("no terminal after the approval; notice: %q", webEval(t, alice, `document.getElementById('notice').textContent`))
	}
	if as := browsertest.Text(t, alice, "#as"); !strings.Contains(as, "nobody") {
		t.Errorf("#as shows %q", as)
	}
}
