package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// Passkeys end to end: stock ssh through `sshmesh nc` on a check rule that
// asks for a passkey (the default); headless Chromium, playing $BROWSER,
// opens the local link nc announces and answers with a CDP virtual
// authenticator.

// addAuthenticator gives the browser's current tab a virtual platform
// authenticator that says yes to every touch and fingerprint.
func addAuthenticator(t *testing.T, bctx context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, webauthn.Enable, webauthn.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
			Options: &webauthn.VirtualAuthenticatorOptions{
				Protocol: webauthn.AuthenticatorProtocolCtap2, Transport: webauthn.AuthenticatorTransportInternal,
				HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true,
			}})
		return err
	}))
	if err != nil {
		t.Fatalf("virtual authenticator: %v", err)
	}
}

// chromeStatus clicks the button sel and waits until the page's #status
// says something that starts with one of prefixes, or its #title is
// "Approved"; it returns what it says.
func chromeStatus(t *testing.T, bctx context.Context, sel string, prefixes ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click("#"+sel)); err != nil {
		t.Fatalf("click %s: %v", sel, err)
	}
	var got string
	for ctx.Err() == nil {
		s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById("title") && document.getElementById("title").textContent === "Approved") ? "Approved" : (document.getElementById("status") || {}).textContent || ""`))
		got = s
		for _, p := range prefixes {
			if strings.HasPrefix(s, p) {
				return s
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("after clicking %s the page says %q, want one of %q", sel, got, prefixes)
	return ""
}

// passkeyInvite runs `sshmesh passkey invite` for owner on w's server state.
func passkeyInvite(t *testing.T, w *checkWorld, owner string) string {
	t.Helper()
	out, err := exec.Command(binPath, "passkey", "invite", "--state", filepath.Join(w.dir, "state"), "--owner", owner).Output()
	if err != nil {
		t.Fatalf("passkey invite: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestCheckPasskey: a check that asks for a passkey (the default) is
// approved only with the owner's enrolled passkey: first with none (the page
// says so), then enrolled with the admin's code, then approved by it; the
// waiting ssh ends by itself with the command's exit code, and the next
// login within the period goes straight through.
func TestCheckPasskey(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	sshmeshtest.NeedBinary(t, "chromium", "chromium")
	w := startCheckWorld(t, "2m", "")
	browser := startCheckChromium(t, "")
	s, link := startCheckSSHWithBrowser(t, w)
	if code := chromeVisit(t, browser, link); code != 200 {
		t.Fatalf("the local link answered %d", code)
	}
	addAuthenticator(t, browser)
	// No passkey yet: the page says so, and how to enrol.
	if st := chromeStatus(t, browser, "approve", "Not approved"); !strings.Contains(st, "No passkey is enrolled for alice@example.com") {
		t.Errorf("approve without a passkey: %q", st)
	}
	if !s.running(300 * time.Millisecond) {
		t.Fatalf("ssh ended: exit %d\n%s", s.code, s.stderr.String())
	}
	// A code for another owner does not enrol alice.
	ctx, cancel := context.WithTimeout(browser, 10*time.Second)
	chromedp.Do(ctx, chromedp.SetValue("#code", passkeyInvite(t, w, "carol@example.com")))
	cancel()
	if st := chromeStatus(t, browser, "enrol", "Not enrolled", "Passkey enrolled"); !strings.Contains(st, "not for alice@example.com") {
		t.Errorf("carol's code: %q", st)
	}
	ctx, cancel = context.WithTimeout(browser, 10*time.Second)
	chromedp.Do(ctx, chromedp.SetValue("#code", passkeyInvite(t, w, "alice@example.com")))
	cancel()
	if st := chromeStatus(t, browser, "enrol", "Not enrolled", "Passkey enrolled"); !strings.HasPrefix(st, "Passkey enrolled") {
		t.Fatalf("enrol: %q", st)
	}
	if fi, err := os.Stat(filepath.Join(w.dir, "state", "passkeys.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("passkeys.json: %v %v", fi, err)
	}
	if st := chromeStatus(t, browser, "approve", "Not approved", "Approved"); st != "Approved" {
		t.Fatalf("approve with the passkey: %q", st)
	}
	if code := s.wait(t); code != 7 || s.stdout.String() != "checked-in\n" {
		t.Errorf("approved ssh: exit %d, stdout %q, stderr:\n%s", code, s.stdout.String(), s.stderr.String())
	}
	// Within checkPeriod: straight through.
	s = startCheckSSH(t, w.laptopConf, nil, "--no-browser", "root@100.64.0.1", "exit 3")
	if code := s.wait(t); code != 3 || strings.Contains(s.stderr.String(), "Approve") {
		t.Errorf("second login: exit %d, stderr %q; want 3 and no banner", code, s.stderr.String())
	}

	// With the node's key (nc runs as the laptop) but another passkey, or
	// none: no approval. The stranger's authenticator makes its own
	// credential for this server's link host and offers it for alice's challenge (after
	// trying an empty answer).
	s = startCheckSSH(t, w.laptopConf, nil, "--no-browser", "nobody@100.64.0.1", "true")
	link = s.localLink(t)
	thief := startCheckChromium(t, "")
	if code := chromeVisit(t, thief, link); code != 200 {
		t.Fatalf("the local link answered %d", code)
	}
	addAuthenticator(t, thief)
	const forge = `(async () => {
  const csrf = document.querySelector('input[name=csrf]').value;
  const b64 = buf => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g,"-").replace(/\//g,"_").replace(/=+$/,"");
  const unb64 = s => Uint8Array.from(atob(s.replace(/-/g,"+").replace(/_/g,"/")), c => c.charCodeAt(0));
  await navigator.credentials.create({publicKey: {rp: {id: location.hostname, name: "x"}, user: {id: new Uint8Array(32), name: "alice@example.com", displayName: "a"},
    challenge: new Uint8Array(32), pubKeyCredParams: [{type: "public-key", alg: -7}], authenticatorSelection: {residentKey: "required"}}});
  const call = async (p, b) => { const r = await fetch(location.pathname + p, {method: "POST", headers: {"Sshmesh-Csrf": csrf, "Content-Type": "application/json"}, body: JSON.stringify(b || {})}); return [r.status, await r.json()]; };
  await call("/passkey/begin");
  const [none] = await call("/passkey/finish", {});
  const [, o] = await call("/passkey/begin");
  const c = await navigator.credentials.get({publicKey: {challenge: unb64(o.publicKey.challenge), rpId: location.hostname, allowCredentials: []}});
  const r = c.response;
  const [status, j] = await call("/passkey/finish", {id: c.id, rawId: b64(c.rawId), type: c.type, response: {clientDataJSON: b64(r.clientDataJSON),
    authenticatorData: b64(r.authenticatorData), signature: b64(r.signature), userHandle: r.userHandle ? b64(r.userHandle) : undefined}});
  return status + " " + (j.error || j.title) + " (no assertion: " + none + ")";
})()`
	ctx, cancel = context.WithTimeout(thief, 30*time.Second)
	res, err := chromedp.Run(ctx, chromedp.Evaluate[string](forge, chromedp.EvalAwaitPromise))
	cancel()
	if err != nil {
		t.Fatalf("the stranger's assertion: %v", err)
	}
	if !strings.HasPrefix(res, "403 The passkey was not accepted") || !strings.HasSuffix(res, "(no assertion: 403)") {
		t.Errorf("a passkey not enrolled for alice, and none: %q, want 403 for both", res)
	}
	if !s.running(300 * time.Millisecond) {
		t.Fatalf("ssh ended without approval: exit %d\n%s", s.code, s.stderr.String())
	}
}

// TestCheckOIDC: a rule with "checkProof": "oidc" on `serve
// --oidc-issuer`: the page on nc's local link starts a device sign-in at
// the provider, the person signs in there as the owner, and the waiting
// ssh ends by itself. (Other emails: checkpage's TestOIDC.)
func TestCheckOIDC(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	sshmeshtest.NeedBinary(t, "chromium", "chromium")
	idp := sshmeshtest.NewOIDCProvider(t)
	w := startCheckWorld(t, "2m", "oidc", "--oidc-issuer", idp.URL, "--oidc-client-id", "sshmesh-e2e")
	browser := startCheckChromium(t, "")
	s := startCheckSSH(t, w.laptopConf, nil, "--no-browser", "root@100.64.0.1", "echo signed-in; exit 5")
	link := s.localLink(t)
	if code := chromeVisit(t, browser, link); code != 200 {
		t.Fatalf("the local link answered %d", code)
	}
	ctx, cancel := context.WithTimeout(browser, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click("#approve"), chromedp.WaitVisible("#signin")); err != nil {
		t.Fatalf("start the sign-in: %v", err)
	}
	code := chromeText(t, browser, "user-code")
	if href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("signin-link").href`)); err != nil || !strings.HasPrefix(href, idp.URL) {
		t.Errorf("sign-in link %q (%v), want one at %s", href, err, idp.URL)
	}
	if !s.running(300 * time.Millisecond) {
		t.Fatalf("ssh ended before the sign-in: exit %d\n%s", s.code, s.stderr.String())
	}
	if err := idp.SignIn(code, "alice@example.com", true); err != nil {
		t.Fatal(err)
	}
	if c := s.wait(t); c != 5 || s.stdout.String() != "signed-in\n" {
		t.Errorf("signed-in ssh: exit %d, stdout %q, stderr:\n%s", c, s.stdout.String(), s.stderr.String())
	}
}
