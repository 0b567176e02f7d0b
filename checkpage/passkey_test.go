package checkpage_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/checkpage"
)

// passkeyWorld is a world whose check rule asks for a passkey (the
// default), with a passkey file and an invitation dir.
func passkeyWorld(t *testing.T) (*world, string) {
	dir := t.TempDir()
	w := newWorld(t, func(c *checkpage.Checker) {
		c.PasskeyFile = filepath.Join(dir, "passkeys.json")
		c.InviteDir = filepath.Join(dir, "invites")
	})
	w.passkey.Store(true)
	return w, filepath.Join(dir, "invites")
}

// api POSTs body to the passkey API path under the page u, as from, with
// the CSRF token and Origin given ("" leaves them out).
func api(t *testing.T, from netip.Addr, u, path, csrf, origin, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", u+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if csrf != "" {
		req.Header.Set(checkpage.CSRFHeader, csrf)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := browser(from).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// TestPasskeyRuleHasNoButton: under a rule that asks for a passkey, the
// plain approval is refused, even to a node of the caller's owner with the
// right form token; the page says how to enrol; Deny still works.
func TestPasskeyRuleHasNoButton(t *testing.T) {
	w, _ := passkeyWorld(t)
	l := w.login(aliceLap, "deploy")
	u := l.url(t)
	if b := l.allBanners(); !strings.Contains(b, "It takes a passkey of alice@example.com: with sshmesh nc, open the .localhost link it prints.") {
		t.Errorf("banner %q: want the passkey hint", b)
	}
	code, body, csrf := page(t, alicePhone, u)
	if code != 200 || !strings.Contains(body, "Approve with a passkey") || !strings.Contains(body, "sshmesh passkey invite --owner alice@example.com") {
		t.Fatalf("page %d:\n%s", code, body)
	}
	if code, body := decide(t, alicePhone, u, "approve", csrf); code != http.StatusForbidden || !strings.Contains(body, "needs a passkey") {
		t.Errorf("plain approve: %d\n%s", code, body)
	}
	if !l.waiting() {
		t.Fatalf("the login ended: %v", l.err)
	}
	if code, _ := decide(t, alicePhone, u, "deny", csrf); code != 200 {
		t.Errorf("deny: %d", code)
	}
	if err := l.wait(t); err == nil {
		t.Error("denied login got in")
	}
}

// TestPasskeyAPIGuards: the passkey API needs the page's CSRF token, a
// local link's origin and a node of the caller's owner; without a passkey
// enrolled it says so; enrolment needs a live code for the caller's owner.
func TestPasskeyAPIGuards(t *testing.T) {
	w, invites := passkeyWorld(t)
	host := checkpage.LinkHost(w.keys[serverAddr])
	localOrigin := "http://" + host + ":41234"
	l := w.login(aliceLap, "deploy")
	u := l.url(t)
	_, _, csrf := page(t, alicePhone, u)
	for _, c := range []struct {
		name             string
		from             netip.Addr
		path, csrf, orig string
		body             string
		code             int
	}{
		{"no csrf", alicePhone, "/passkey/begin", "", localOrigin, "{}", 403},
		{"wrong csrf", alicePhone, "/passkey/begin", "x" + csrf[1:], localOrigin, "{}", 403},
		{"mesh origin", alicePhone, "/passkey/begin", csrf, "http://127.0.0.1", "{}", 403},
		{"no origin", alicePhone, "/passkey/begin", csrf, "", "{}", 403},
		{"https origin", alicePhone, "/passkey/begin", csrf, "https://" + host + ":41234", "{}", 403},
		{"plain localhost", alicePhone, "/passkey/begin", csrf, "http://localhost:41234", "{}", 403},
		{"another server's link", alicePhone, "/passkey/begin", csrf, "http://s00000000000000000000000000000000.localhost:41234", "{}", 403},
		{"other owner", bobLap, "/passkey/begin", csrf, localOrigin, "{}", 403},
		{"none enrolled", alicePhone, "/passkey/begin", csrf, localOrigin, "{}", 409},
		{"finish without begin", alicePhone, "/passkey/finish", csrf, localOrigin, "{}", 400},
		{"no code", alicePhone, "/enrol/begin", csrf, localOrigin, `{"code": ""}`, 403},
		{"made-up code", alicePhone, "/enrol/begin", csrf, localOrigin, `{"code": "AAAAAAAAAAAAAAAAAAAA"}`, 403},
	} {
		if code, m := api(t, c.from, u, c.path, c.csrf, c.orig, c.body); code != c.code {
			t.Errorf("%s: %d %v, want %d", c.name, code, m, c.code)
		}
	}
	bobCode, err := checkpage.NewInvite(invites, "bob@example.com", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if code, m := api(t, alicePhone, u, "/enrol/begin", csrf, localOrigin, `{"code": "`+bobCode+`"}`); code != 403 {
		t.Errorf("bob's code on alice's check: %d %v", code, m)
	}
	expired, _ := checkpage.NewInvite(invites, "alice@example.com", -time.Second)
	if code, m := api(t, alicePhone, u, "/enrol/begin", csrf, localOrigin, `{"code": "`+expired+`"}`); code != 403 {
		t.Errorf("expired code: %d %v", code, m)
	}
	good, _ := checkpage.NewInvite(invites, "alice@example.com", time.Hour)
	code, m := api(t, alicePhone, u, "/enrol/begin", csrf, localOrigin, `{"code": "`+good+`"}`)
	if code != 200 {
		t.Fatalf("good code: %d %v", code, m)
	}
	if rp, _ := m["publicKey"].(map[string]any)["rp"].(map[string]any); rp["id"] != host {
		t.Errorf("relying party %v, want id %s", rp, host)
	}
	// The directory of invitations holds digests, not the codes, 0600.
	ents, _ := os.ReadDir(invites)
	for _, e := range ents {
		if strings.Contains(e.Name(), good) {
			t.Errorf("invitation file %s names its code", e.Name())
		}
		if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 {
			t.Errorf("invitation file %s mode %v", e.Name(), fi.Mode())
		}
	}
	if !l.waiting() {
		t.Fatalf("the login ended: %v", l.err)
	}
}
