package checkpage_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/checkpage"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestOIDC: a rule with "checkProof": "oidc" is approved by a sign-in at
// the provider as the caller's owner with a verified email, and not by one
// as somebody else, nor by an unverified email, nor by the plain button.
func TestOIDC(t *testing.T) {
	idp := sshmeshtest.NewOIDCProvider(t)
	w := newWorld(t, func(c *checkpage.Checker) {
		c.OIDC = &checkpage.OIDC{Issuer: idp.URL, ClientID: "sshmesh-test"}
	})
	w.oidc.Store(true)
	l := w.login(aliceLap, "deploy")
	u := l.url(t)
	code, body, csrf := page(t, alicePhone, u)
	if code != 200 || !strings.Contains(body, "Sign in to approve") || !strings.Contains(body, idp.URL) {
		t.Fatalf("page %d:\n%s", code, body)
	}
	if code, _ := decide(t, alicePhone, u, "approve", csrf); code != http.StatusForbidden {
		t.Errorf("plain approve: %d, want 403", code)
	}
	if code, m := api(t, bobLap, u, "/oidc/start", csrf, "", ""); code != 403 {
		t.Errorf("bob starts a sign-in: %d %v", code, m)
	}
	if code, m := api(t, alicePhone, u, "/oidc/start", "", "", ""); code != 403 {
		t.Errorf("no csrf: %d %v", code, m)
	}
	start := func(prev string) string {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			code, m := api(t, alicePhone, u, "/oidc/start", csrf, "", "")
			uc, _ := m["user_code"].(string)
			if code != 200 || uc == "" || !strings.HasPrefix(m["verification_uri"].(string), idp.URL) {
				t.Fatalf("start: %d %v", code, m)
			}
			if uc != prev {
				return uc
			}
		}
		t.Fatalf("the sign-in with code %s did not end within 30 s", prev)
		return ""
	}
	uc := start("")
	mustSignIn(t, idp, uc, "bob@example.com", true) // somebody else
	uc = start(uc)                                  // a new sign-in once that one failed
	if !l.waiting() {
		t.Fatalf("bob's sign-in let the login in: %v", l.err)
	}
	mustSignIn(t, idp, uc, "alice@example.com", false) // not verified
	uc = start(uc)
	if !l.waiting() {
		t.Fatalf("an unverified email let the login in: %v", l.err)
	}
	mustSignIn(t, idp, uc, "Alice@Example.com", true)
	if err := l.wait(t); err != nil || l.out != "hello deploy" {
		t.Fatalf("signed-in login: %v, %q", err, l.out)
	}
	// Cached for the period.
	l2 := w.login(aliceLap, "deploy")
	if err := l2.wait(t); err != nil || l2.allBanners() != "" {
		t.Errorf("cached login: %v, banners %q", err, l2.allBanners())
	}
}

func mustSignIn(t *testing.T, p *sshmeshtest.OIDCProvider, code, email string, verified bool) {
	t.Helper()
	if err := p.SignIn(code, email, verified); err != nil {
		t.Fatal(err)
	}
}
