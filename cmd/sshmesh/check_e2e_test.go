package main

import (
	"context"
	"errors"
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

	"github.com/chromedp/chromedp"
	"golang.org/x/net/proxy"

	"github.com/sshmesh/sshmesh/internal/browsertest"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// Check mode end to end: `sshmesh serve` with a check rule, the stock ssh
// client through `sshmesh nc`, and headless Chromium reaching the approval
// page through `sshmesh proxy`.

var checkURLRE = regexp.MustCompile(`Approve this login at (http://100\.64\.0\.1/check/[A-Za-z0-9_-]{22}) \(waiting up to 2m\)`)

// checkWorld is a mesh of a server, a laptop (the caller), alice's browser
// node (same owner as the laptop) and bob's browser node, with `sshmesh
// serve` running on the server.
type checkWorld struct {
	dir, laptopConf, laptop2Conf, aliceConf, bobConf string
	serveLog                                         *sshmeshtest.Buffer
}

// startCheckWorld starts it with a check rule for laptop and laptop2 that
// asks for proof ("mesh", "passkey", "oidc"; "" leaves checkProof out),
// logins waiting up to timeout; serve gets serveArgs too.
func startCheckWorld(t *testing.T, timeout, proof string, serveArgs ...string) *checkWorld {
	t.Helper()
	sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	m := sshmeshtest.NewMesh(t, 5)
	for _, n := range m.Nodes {
		n.Node.Close() // the processes below run these nodes
	}
	srvN, laptop, alice, bob, laptop2 := m.Nodes[0], m.Nodes[1], m.Nodes[2], m.Nodes[3], m.Nodes[4]
	dir := t.TempDir()
	w := &checkWorld{dir: dir,
		laptopConf:  laptop.WriteWGQuick(t, filepath.Join(dir, "laptop.conf")),
		laptop2Conf: laptop2.WriteWGQuick(t, filepath.Join(dir, "laptop2.conf")),
		aliceConf:   alice.WriteWGQuick(t, filepath.Join(dir, "alice.conf")),
		bobConf:     bob.WriteWGQuick(t, filepath.Join(dir, "bob.conf")),
		serveLog:    &sshmeshtest.Buffer{},
	}
	proofJSON := ""
	if proof != "" {
		proofJSON = fmt.Sprintf(`, "checkProof": %q`, proof)
	}
	pol := fmt.Sprintf(`{
  "nodes": {
    "srv": {"key": %q, "tags": ["tag:server"]},
    "laptop": {"key": %q, "owner": "alice@example.com"},
    "alice-web": {"key": %q, "owner": "alice@example.com"},
    "bob-web": {"key": %q, "owner": "bob@example.com"},
    "laptop2": {"key": %q, "owner": "carol@example.com"},
  },
  "tagOwners": {"tag:server": ["alice@example.com"]},
  "ssh": [
    {"action": "check", "src": ["laptop", "laptop2"], "dst": ["tag:server"], "users": ["root", "nobody"], "checkPeriod": "1h"%s},
  ],
}`, srvN.Key.Public(), laptop.Key.Public(), alice.Key.Public(), bob.Key.Public(), laptop2.Key.Public(), proofJSON)
	polPath := filepath.Join(dir, "policy.hujson")
	if err := os.WriteFile(polPath, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	serveConf := srvN.WriteWGQuick(t, filepath.Join(dir, "server.conf"))
	startServe(t, w.serveLog, nil, append([]string{"--wg", serveConf, "--policy", polPath, "--state", filepath.Join(dir, "state"),
		"--check-timeout", timeout}, serveArgs...)...)
	return w
}

// checkSSH is a stock ssh client running in the background.
type checkSSH struct {
	cmd            *exec.Cmd
	stdout, stderr sshmeshtest.Buffer
	done           chan struct{}
	code           int
}

// startCheckSSH runs ssh through `sshmesh nc --wg conf ncFlags...` with env
// added to the environment.
func startCheckSSH(t *testing.T, conf string, env []string, ncFlags string, args ...string) *checkSSH {
	t.Helper()
	ssh := sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	all := append(append(meshClientOptions(conf, strings.Fields(ncFlags)...), noAgent...), args...)
	s := &checkSSH{cmd: exec.Command(ssh, all...), done: make(chan struct{})}
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	s.cmd.Env = append(os.Environ(), env...)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := s.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			s.code = ee.ExitCode()
		} else if err != nil {
			s.code = -1
		}
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// url waits for the check URL on ssh's stderr.
func (s *checkSSH) url(t *testing.T) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := checkURLRE.FindStringSubmatch(s.stderr.String()); m != nil {
			return m[1]
		}
		select {
		case <-s.done:
			t.Fatalf("ssh exited %d without a check URL; stderr:\n%s", s.code, s.stderr.String())
		default:
		}
	}
	t.Fatalf("no check URL on ssh's stderr within 30 s:\n%s", s.stderr.String())
	return ""
}

// wait waits for ssh to exit and returns its exit code.
func (s *checkSSH) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-s.done:
		return s.code
	case <-time.After(60 * time.Second):
		t.Fatalf("ssh still running after 60 s; stderr:\n%s", s.stderr.String())
	}
	return 0
}

func (s *checkSSH) running(d time.Duration) bool {
	select {
	case <-s.done:
		return false
	case <-time.After(d):
		return true
	}
}

// startCheckProxy runs `sshmesh proxy` for the node in conf and returns its
// SOCKS5 address and its output.
func startCheckProxy(t testing.TB, conf string) (string, *sshmeshtest.Buffer) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	log := &sshmeshtest.Buffer{}
	cmd := exec.Command(binPath, "proxy", "--wg", conf, "--socks5", addr, "--no-browser")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("proxy %s log:\n%s", filepath.Base(conf), log.String())
		}
	})
	log.WaitFor(t, "SOCKS5 proxy on")
	return addr, log
}

// startCheckChromium starts headless Chromium whose traffic goes through the
// SOCKS5 proxy at socks (none when ""), and returns a chromedp context for
// it.
func startCheckChromium(t *testing.T, socks string) context.Context {
	t.Helper()
	return browsertest.Start(t, browsertest.Options{Proxy: socks})
}

// visit opens u in the browser and returns the HTTP status.
func chromeVisit(t *testing.T, bctx context.Context, u string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(u))
	if err != nil {
		t.Fatalf("navigate %s: %v", u, err)
	}
	return int(resp.Status)
}

// text returns the text of the element sel on the current page.
func chromeText(t *testing.T, bctx context.Context, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text("#"+sel))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// click clicks the button sel and waits for the result page's title.
func chromeClick(t *testing.T, bctx context.Context, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click("#"+sel), chromedp.WaitNotPresent("#approve")); err != nil {
		t.Fatalf("click %s: %v", sel, err)
	}
	return chromeText(t, bctx, "title")
}

func TestCheckInBrowser(t *testing.T) {
	sshmeshtest.NeedRoot(t) // logs in as root and nobody
	sshmeshtest.NeedBinary(t, "chromium", "chromium")
	w := startCheckWorld(t, "2m", "mesh")
	aliceProxy, _ := startCheckProxy(t, w.aliceConf)
	bobProxy, _ := startCheckProxy(t, w.bobConf)
	aliceBrowser := startCheckChromium(t, aliceProxy)
	bobBrowser := startCheckChromium(t, bobProxy)

	// A check: the URL on stderr, bob's browser refused, alice approves.
	s := startCheckSSH(t, w.laptopConf, nil, "--no-browser", "root@100.64.0.1", "echo checked-in; exit 7")
	u := s.url(t)
	if code := chromeVisit(t, bobBrowser, u); code != 403 {
		t.Errorf("bob's browser got %d, want 403", code)
	}
	if title := chromeText(t, bobBrowser, "title"); title != "Forbidden" {
		t.Errorf("bob's browser shows %q, want Forbidden", title)
	}
	if !s.running(500 * time.Millisecond) {
		t.Fatalf("ssh ended after bob's visit: exit %d\n%s", s.code, s.stderr.String())
	}
	if code := chromeVisit(t, aliceBrowser, u); code != 200 {
		t.Fatalf("alice's browser got %d", code)
	}
	for sel, want := range map[string]string{"caller": "laptop", "owner": "alice@example.com", "local-user": "root", "rule": "ssh[0]"} {
		if got := chromeText(t, aliceBrowser, sel); !strings.Contains(got, want) {
			t.Errorf("#%s shows %q, want %q", sel, got, want)
		}
	}
	if title := chromeClick(t, aliceBrowser, "approve"); title != "Approved" {
		t.Errorf("after Approve the page says %q", title)
	}
	if code := s.wait(t); code != 7 || s.stdout.String() != "checked-in\n" {
		t.Errorf("approved ssh: exit %d, stdout %q, stderr:\n%s", code, s.stdout.String(), s.stderr.String())
	}

	// Within checkPeriod: no banner, straight through.
	s = startCheckSSH(t, w.laptopConf, nil, "--no-browser", "root@100.64.0.1", "exit 3")
	if code := s.wait(t); code != 3 || strings.Contains(s.stderr.String(), "Approve") {
		t.Errorf("second login: exit %d, stderr %q; want 3 and no banner", code, s.stderr.String())
	}

	// Deny: the message, and exit 255.
	s = startCheckSSH(t, w.laptopConf, nil, "--no-browser", "nobody@100.64.0.1", "true")
	u2 := s.url(t)
	if u2 == u {
		t.Error("the token was reused")
	}
	if code := chromeVisit(t, aliceBrowser, u2); code != 200 {
		t.Fatalf("alice's browser got %d", code)
	}
	if got := chromeText(t, aliceBrowser, "local-user"); got != "nobody" {
		t.Errorf("#local-user shows %q", got)
	}
	if title := chromeClick(t, aliceBrowser, "deny"); title != "Denied" {
		t.Errorf("after Deny the page says %q", title)
	}
	if code := s.wait(t); code != 255 || !strings.Contains(s.stderr.String(), "login denied at the approval page") {
		t.Errorf("denied ssh: exit %d, stderr:\n%s", code, s.stderr.String())
	}
	// The used token is gone.
	if code := chromeVisit(t, aliceBrowser, u); code != 404 {
		t.Errorf("used token: %d, want 404", code)
	}
}

// TestCheckOpensBrowser: nc opens a local link to its own conn's page with
// $BROWSER, once, and only its own conn's.
func TestCheckOpensBrowser(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	w := startCheckWorld(t, "2m", "mesh")
	script := filepath.Join(w.dir, "browser.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$1\" >> \"$OPENED\"\n"), 0o755)
	opened1, opened2 := filepath.Join(w.dir, "opened1"), filepath.Join(w.dir, "opened2")

	s1 := startCheckSSH(t, w.laptopConf, []string{"BROWSER=" + script, "OPENED=" + opened1}, "", "root@100.64.0.1", "true")
	s2 := startCheckSSH(t, w.laptop2Conf, []string{"BROWSER=" + script, "OPENED=" + opened2}, "", "root@100.64.0.1", "true")
	u1, u2 := s1.url(t), s2.url(t)
	if u1 == u2 {
		t.Fatal("two callers share a check")
	}
	for _, c := range []struct {
		file, url string
		s         *checkSSH
	}{{opened1, u1, s1}, {opened2, u2, s2}} {
		link := c.s.localLink(t)
		var got string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			b, _ := os.ReadFile(c.file)
			if got = string(b); got != "" {
				break
			}
		}
		time.Sleep(500 * time.Millisecond) // a second open would land by now
		b, _ := os.ReadFile(c.file)
		if got = string(b); got != link+"\n" {
			t.Errorf("%s: the browser got %q, want %q once", filepath.Base(c.file), got, link)
		}
		if tokenOf(link) != tokenOf(c.url) {
			t.Errorf("local link %s is not for the banner's check %s", link, c.url)
		}
	}
	if !strings.Contains(s1.stderr.String(), "opening the approval page in your browser") {
		t.Errorf("nc did not say it opens the browser:\n%s", s1.stderr.String())
	}
}

var localLinkRE = regexp.MustCompile(`approve this login in this machine's browser at (http://s[0-9a-f]{32}\.localhost:[0-9]+/check/[A-Za-z0-9_-]{22})\n`)

// localLink waits for nc's local approval link on ssh's stderr.
func (s *checkSSH) localLink(t *testing.T) string {
	t.Helper()
	if m := localLinkRE.FindStringSubmatch(waitCheckStderr(s, "machine's browser at")); m != nil {
		return m[1]
	}
	t.Fatalf("no local approval link on ssh's stderr within 20 s:\n%s", s.stderr.String())
	return ""
}

// tokenOf is the check token at the end of an approval page's URL.
func tokenOf(u string) string { return u[strings.LastIndex(u, "/")+1:] }

// startCheckSSHWithBrowser starts `ssh root@100.64.0.1 'echo checked-in;
// exit 7'` through nc with a $BROWSER that records what nc hands it, and
// returns the login and the local link nc printed, once $BROWSER got that
// same link (the test then plays the browser).
func startCheckSSHWithBrowser(t *testing.T, w *checkWorld) (*checkSSH, string) {
	t.Helper()
	script := filepath.Join(w.dir, "browser.sh")
	opened := filepath.Join(w.dir, "opened")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$1\" >> \"$OPENED\"\n"), 0o755)
	s := startCheckSSH(t, w.laptopConf, []string{"BROWSER=" + script, "OPENED=" + opened}, "", "root@100.64.0.1", "echo checked-in; exit 7")
	link := s.localLink(t)
	var got string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && got == ""; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(opened)
		got = strings.TrimSpace(string(b))
	}
	if got != link {
		t.Fatalf("$BROWSER got %q, want %q", got, link)
	}
	return s, link
}

// TestCheckLocalLink: with only stock ssh and `sshmesh nc`, the person
// approves in a browser that is on no mesh, through the link nc prints;
// the link serves only that check and stops with it.
func TestCheckLocalLink(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	sshmeshtest.NeedBinary(t, "chromium", "chromium")
	w := startCheckWorld(t, "2m", "mesh")
	browser := startCheckChromium(t, "")
	s, link := startCheckSSHWithBrowser(t, w)
	if code := chromeVisit(t, browser, link); code != 200 {
		t.Fatalf("the local link answered %d", code)
	}
	for sel, want := range map[string]string{"caller": "laptop", "owner": "alice@example.com", "local-user": "root"} {
		if got := chromeText(t, browser, sel); !strings.Contains(got, want) {
			t.Errorf("#%s shows %q, want %q", sel, got, want)
		}
	}
	// Another path on the link's port is not forwarded.
	base := strings.TrimSuffix(link, "/check/"+tokenOf(link))
	if code := chromeVisit(t, browser, base+"/check/AAAAAAAAAAAAAAAAAAAAAA"); code != 404 {
		t.Errorf("another token through the link: %d, want 404", code)
	}
	if code := chromeVisit(t, browser, link); code != 200 {
		t.Fatalf("the local link answered %d", code)
	}
	if title := chromeClick(t, browser, "approve"); title != "Approved" {
		t.Errorf("after Approve the page says %q", title)
	}
	if code := s.wait(t); code != 7 || s.stdout.String() != "checked-in\n" {
		t.Errorf("approved ssh: exit %d, stdout %q, stderr:\n%s", code, s.stdout.String(), s.stderr.String())
	}
	// The link has stopped with its check (and nc with its conn).
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+base[strings.LastIndex(base, ":")+1:], 2*time.Second); err == nil {
		c.Close()
		t.Error("the local link still accepts conns after the check ended")
	}
}

func TestCheckTimeout(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	w := startCheckWorld(t, "2s", "")
	s := startCheckSSH(t, w.laptopConf, nil, "--no-browser", "root@100.64.0.1", "true")
	if !strings.Contains(s.stderr.String()+waitCheckStderr(s, "waiting up to"), "waiting up to 2s") {
		t.Errorf("banner:\n%s", s.stderr.String())
	}
	if code := s.wait(t); code != 255 || !strings.Contains(s.stderr.String(), "not approved within 2s") {
		t.Errorf("timed-out ssh: exit %d, stderr:\n%s", code, s.stderr.String())
	}
}

// waitCheckStderr waits up to 20 s for sub on s's stderr and returns stderr.
func waitCheckStderr(s *checkSSH, sub string) string {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(s.stderr.String(), sub) {
			break
		}
	}
	return s.stderr.String()
}

// socksHTTP is an HTTP client whose conns go through the SOCKS5 proxy at
// socks (a browser on the mesh, as that proxy's node).
func socksHTTP(t *testing.T, socks string) *http.Client {
	t.Helper()
	d, err := proxy.SOCKS5("tcp", socks, nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.(proxy.ContextDialer).DialContext(ctx, network, addr)
		}}}
}

// loopbackHTTP is an HTTP client that reaches *.localhost names on
// 127.0.0.1, as browsers do (Go's resolver does not).
func loopbackHTTP() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, _ := net.SplitHostPort(addr)
			if strings.HasSuffix(host, ".localhost") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}}
}

// approveVia approves the mesh-proof check at u with an HTTP client.
func approveVia(t *testing.T, c *http.Client, u string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(b)
	if resp.StatusCode != 200 || m == nil {
		t.Fatalf("GET %s: %d\n%s", u, resp.StatusCode, b)
	}
	resp, err = c.PostForm(u, url.Values{"csrf": {string(m[1])}, "decision": {"approve"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("approve: %d", resp.StatusCode)
	}
}

// TestCheckSameKey: nc and a proxy with the same key. nc warns; the
// README's set-up (approve through nc's local link) does not hang; and
// when the proxy does take the laptop's traffic during a check, the server
// says so instead of "client disconnected".
func TestCheckSameKey(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	w := startCheckWorld(t, "2m", "mesh")
	laptopProxy, _ := startCheckProxy(t, w.laptopConf)
	aliceProxy, _ := startCheckProxy(t, w.aliceConf)

	s := startCheckSSH(t, w.laptopConf, nil, "--no-browser", "root@100.64.0.1", "echo checked-in; exit 7")
	link := s.localLink(t)
	if got := waitCheckStderr(s, "runs this node's key"); !strings.Contains(got, "another sshmesh process of yours runs this node's key: proxy laptop.conf (pid ") {
		t.Errorf("nc did not warn about the proxy:\n%s", got)
	}
	approveVia(t, loopbackHTTP(), link)
	if code := s.wait(t); code != 7 || s.stdout.String() != "checked-in\n" {
		t.Errorf("approved through the local link: exit %d, stdout %q, stderr:\n%s", code, s.stdout.String(), s.stderr.String())
	}

	// The set-up the README warns against: the proxy speaks to the server
	// while nc's login waits (as a browser through it would), and the
	// approval comes from elsewhere. The server's packets for nc's conn
	// go to the proxy then.
	s = startCheckSSH(t, w.laptopConf, nil, "--no-browser", "nobody@100.64.0.1", "true")
	u := s.url(t)
	c, err := socksHTTP(t, laptopProxy).Transport.(*http.Transport).DialContext(context.Background(), "tcp", "100.64.0.1:22")
	if err != nil {
		t.Fatalf("through the laptop's proxy: %v", err)
	}
	c.Close()
	approveVia(t, socksHTTP(t, aliceProxy), u)
	w.serveLog.WaitFor(t, "endpoint moved to another process with the same key")
}
