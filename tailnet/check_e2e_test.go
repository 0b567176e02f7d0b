package tailnet_test

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sshmesh/sshmesh/internal/browsertest"
	"github.com/sshmesh/sshmesh/internal/testkit"
)

// checkURL is the approval page's URL in the banner the ssh client prints.
var checkURL = regexp.MustCompile(`Approve this login at (http://100\.[0-9.]+/check/[A-Za-z0-9_-]{22})`)

// checkInBrowser: a login under a check rule prints the page's URL and
// waits; bob's browser (through bob's node) is forbidden; alice's browser,
// through her own node, approves; the login then goes on by itself.
func (f *tailnetFixture) checkInBrowser(t *testing.T) {
	testkit.NeedBinary(t, "chromium", "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A login held for its check reads no keepalive replies: allow the
	// browsers (slow to start on a loaded machine) two minutes, not the 6 s
	// of sshOptions' keepalives (ssh takes an option's first value).
	args := append(append([]string{"-o", "ServerAliveCountMax=60"}, sshOptions(f.alice)...), f.checkUser.Name+"@"+f.host, "echo checked-in; exit 7")
	cmd := exec.CommandContext(ctx, "ssh", args...)
	stdout, stderr := &testkit.Buffer{}, &testkit.Buffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	stderr.WaitFor(t, "/check/")
	m := checkURL.FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no check URL in ssh's stderr:\n%s", stderr.String())
	}
	u := m[1]

	bob := startChromium(t, f.bob.socks)
	if code := visit(t, bob, u); code != 403 {
		t.Errorf("bob's browser got %d, want 403", code)
	}
	select {
	case err := <-done:
		t.Fatalf("ssh ended after bob's visit: %v\n%s", err, stderr.String())
	case <-time.After(500 * time.Millisecond):
	}
	alice := startChromium(t, f.alice.socks)
	if code := visit(t, alice, u); code != 200 {
		t.Fatalf("alice's browser got %d, want 200", code)
	}
	for sel, want := range map[string]string{"owner": "alice@example.com", "local-user": f.checkUser.Name} {
		if got := text(t, alice, sel); !strings.Contains(got, want) {
			t.Errorf("#%s shows %q, want %q", sel, got, want)
		}
	}
	cctx, ccancel := context.WithTimeout(alice, 30*time.Second)
	defer ccancel()
	if err := chromedp.Do(cctx, chromedp.Click("#approve"), chromedp.WaitNotPresent("#approve")); err != nil {
		t.Fatalf("click approve: %v", err)
	}
	if title := text(t, alice, "title"); title != "Approved" {
		t.Errorf("after Approve the page says %q", title)
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 || stdout.String() != "checked-in\n" {
			t.Errorf("approved ssh: %v, stdout %q, stderr:\n%s", err, stdout.String(), stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("ssh still waiting 60 s after the approval:\n%s", stderr.String())
	}
	done <- nil // for the deferred wait
}

// startChromium starts headless Chromium whose traffic goes through the
// SOCKS5 proxy at socks (a tailscaled's, into the tailnet as its node).
func startChromium(t *testing.T, socks string) context.Context {
	t.Helper()
	return browsertest.Start(t, browsertest.Options{Proxy: socks})
}

// visit opens u and returns the HTTP status.
func visit(t *testing.T, bctx context.Context, u string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(u))
	if err != nil {
		t.Fatalf("navigate %s: %v", u, err)
	}
	return int(resp.Status)
}

// text returns the text of the element with id sel.
func text(t *testing.T, bctx context.Context, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text("#"+sel))
	if err != nil {
		t.Fatalf("text of #%s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}
