package checkpage_test

import (
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/checkpage"
)

func TestApproveThenCached(t *testing.T) {
	w := newWorld(t, nil)
	l := w.login(aliceLap, "deploy")
	u := l.url(t)
	if !strings.HasPrefix(u, "http://127.0.0.1:") || !strings.Contains(u, "/check/") {
		t.Fatalf("URL %q", u)
	}
	if !strings.Contains(l.allBanners(), "(waiting up to 10m)") {
		t.Errorf("banner %q: want the wait in it", l.allBanners())
	}
	code, body, _ := page(t, alicePhone, u)
	if code != http.StatusOK {
		t.Fatalf("GET: %d", code)
	}
	for _, want := range []string{"alice-laptop", "alice@example.com", "127.0.0.2", "srv", "<code>deploy</code>", "ssh[0]", "policy.hujson:7", "1h", "alice-phone"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	if !l.waiting() {
		t.Fatalf("login ended before approval: %v", l.err)
	}
	approve(t, u)
	if err := l.wait(t); err != nil || l.out != "hello deploy" {
		t.Fatalf("approved login: %v, %q", err, l.out)
	}

	// Within checkPeriod: straight through, no banner.
	l2 := w.login(aliceLap, "deploy")
	if err := l2.wait(t); err != nil || l2.allBanners() != "" {
		t.Errorf("cached login: %v, banners %q; want no banner", err, l2.allBanners())
	}
	// Another local user is another check.
	l3 := w.login(aliceLap, "root")
	u3 := l3.url(t)
	if u3 == u {
		t.Error("a new check reused the old token")
	}
	approve(t, u3)
	if err := l3.wait(t); err != nil {
		t.Error(err)
	}
}

func TestDeny(t *testing.T) {
	w := newWorld(t, nil)
	l := w.login(aliceLap, "deploy")
	u := l.url(t)
	_, _, csrf := page(t, alicePhone, u)
	if code, body := decide(t, alicePhone, u, "deny", csrf); code != http.StatusOK || !strings.Contains(body, "denied") {
		t.Fatalf("deny: %d %s", code, body)
	}
	if err := l.wait(t); err == nil {
		t.Fatal("denied login got in")
	}
	if b := l.allBanners(); !strings.Contains(b, "sshmesh: login denied at the approval page") {
		t.Errorf("banners %q: want the denial", b)
	}
	// A denial is not cached: the next login asks again.
	l2 := w.login(aliceLap, "deploy")
	approve(t, l2.url(t))
	if err := l2.wait(t); err != nil {
		t.Error(err)
	}
}

func TestOnlySameOwnerMayDecide(t *testing.T) {
	w := newWorld(t, nil)
	l := w.login(aliceLap, "deploy")
	u := l.url(t)
	_, _, csrf := page(t, alicePhone, u)
	// bob owns another node; the tagged node has no owner at all.
	for _, from := range []netip.Addr{bobLap, tagged} {
		if code, body, got := page(t, from, u); code != http.StatusForbidden || got != "" || strings.Contains(body, "deploy") {
			t.Errorf("GET as %s: %d, csrf %q; want 403 and no details\n%s", from, code, got, body)
		}
		for _, d := range []string{"approve", "deny"} {
			if code, _ := decide(t, from, u, d, csrf); code != http.StatusForbidden {
				t.Errorf("POST %s as %s: %d, want 403", d, from, code)
			}
		}
	}
	if !l.waiting() {
		t.Fatalf("login ended after other owners' visits: %v, %q", l.err, l.allBanners())
	}
	approve(t, u)
	if err := l.wait(t); err != nil {
		t.Error(err)
	}
}

func TestFormToken(t *testing.T) {
	w := newWorld(t, nil)
	l := w.login(aliceLap, "deploy")
	u := l.url(t)
	_, _, csrf := page(t, alicePhone, u)
	for name, bad := range map[string]string{"missing": "", "wrong": "AAAAAAAAAAAAAAAAAAAAAA", "truncated": csrf[:10]} {
		if code, _ := decide(t, alicePhone, u, "approve", bad); code != http.StatusForbidden {
			t.Errorf("%s form token: %d, want 403", name, code)
		}
	}
	if code, _ := decide(t, alicePhone, u, "maybe", csrf); code != http.StatusBadRequest {
		t.Errorf("unknown decision: %d, want 400", code)
	}
	if !l.waiting() {
		t.Fatalf("login ended after bad forms: %v", l.err)
	}
	approve(t, u)
	if err := l.wait(t); err != nil {
		t.Fatal(err)
	}
	// Single use: the token is gone, for GET and POST alike.
	if code, _, _ := page(t, alicePhone, u); code != http.StatusNotFound {
		t.Errorf("GET after use: %d, want 404", code)
	}
	if code, _ := decide(t, alicePhone, u, "deny", csrf); code != http.StatusNotFound {
		t.Errorf("POST after use: %d, want 404", code)
	}
}

func TestConcurrentLoginsShareOneCheck(t *testing.T) {
	w := newWorld(t, nil)
	const n = 20
	logins := make([]*login, n)
	for i := range logins {
		logins[i] = w.login(aliceLap, "deploy")
	}
	urls := map[string]int{}
	for _, l := range logins {
		urls[l.url(t)]++
	}
	if len(urls) != 1 {
		t.Fatalf("%d conns got %d URLs, want 1: %v", n, len(urls), urls)
	}
	for u := range urls {
		approve(t, u)
	}
	for i, l := range logins {
		if err := l.wait(t); err != nil || l.out != "hello deploy" {
			t.Errorf("login %d: %v, %q", i, err, l.out)
		}
	}
}

func TestTimeout(t *testing.T) {
	w := newWorld(t, func(c *checkpage.Checker) { c.Timeout = 500 * time.Millisecond })
	l := w.login(aliceLap, "deploy")
	u := l.url(t)
	if !strings.Contains(l.allBanners(), "(waiting up to 1s)") && !strings.Contains(l.allBanners(), "(waiting up to 0s)") {
		t.Logf("banner %q", l.allBanners())
	}
	if err := l.wait(t); err == nil {
		t.Fatal("login got in without approval")
	}
	if b := l.allBanners(); !strings.Contains(b, "not approved within") {
		t.Errorf("banners %q: want the timeout", b)
	}
	// The token dies with the wait: the login's context and the check's
	// timer end together, so allow the timer a moment (10 s: a loaded
	// machine's moment).
	code := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if code, _, _ = page(t, alicePhone, u); code == http.StatusNotFound {
			break
		}
	}
	if code != http.StatusNotFound {
		t.Errorf("GET after the wait ended: %d, want 404", code)
	}
}

func TestCacheExpires(t *testing.T) {
	w := newWorld(t, nil)
	l := w.login(aliceLap, "deploy")
	approve(t, l.url(t))
	if err := l.wait(t); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(59 * time.Minute)
	if l := w.login(aliceLap, "deploy"); l.wait(t) != nil || l.allBanners() != "" {
		t.Fatalf("login within the period: %v %q", l.err, l.allBanners())
	}
	// A reloaded policy with a shorter period takes effect at once.
	w.period = 30 * time.Minute
	l = w.login(aliceLap, "deploy")
	u := l.url(t)
	w.period = time.Hour
	approve(t, u)
	if err := l.wait(t); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(30 * time.Minute)
	l = w.login(aliceLap, "deploy")
	u = l.url(t)
	if !l.waiting() {
		t.Fatal("expired approval let the login in")
	}
	approve(t, u)
	if err := l.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestApprovalsSurviveRestart(t *testing.T) {
	state := filepath.Join(t.TempDir(), "check-approvals.json")
	setup := func(c *checkpage.Checker) { c.StateFile = state }
	w := newWorld(t, setup)
	l := w.login(aliceLap, "deploy")
	approve(t, l.url(t))
	if err := l.wait(t); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(state)
	if err != nil || !strings.Contains(string(b), `"local_user": "deploy"`) {
		t.Fatalf("state file: %v\n%s", err, b)
	}
	if fi, _ := os.Stat(state); fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode())
	}

	w.restart(setup)
	if l := w.login(aliceLap, "deploy"); l.wait(t) != nil || l.allBanners() != "" {
		t.Fatalf("after restart: %v, banners %q; want straight through", l.err, l.allBanners())
	}
	// Expired approvals are dropped on load.
	w.clock.Advance(2 * time.Hour)
	w.restart(setup)
	l = w.login(aliceLap, "deploy")
	approve(t, l.url(t))
	if err := l.wait(t); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(state)
	if n := strings.Count(string(b), `"peer"`); n != 1 {
		t.Errorf("state file holds %d approvals, want 1:\n%s", n, b)
	}

	// A corrupt file is logged and replaced, not fatal.
	os.WriteFile(state, []byte("{not json"), 0o600)
	w.restart(setup)
	l = w.login(aliceLap, "deploy")
	approve(t, l.url(t))
	if err := l.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestRateLimit(t *testing.T) {
	w := newWorld(t, func(c *checkpage.Checker) { c.NewChecksPerMinute = 2 })
	a, b := w.login(aliceLap, "u1"), w.login(aliceLap, "u2")
	a.url(t)
	b.url(t)
	c := w.login(aliceLap, "u3")
	if err := c.wait(t); err == nil || !strings.Contains(c.allBanners(), "too many logins waiting") {
		t.Fatalf("third new check in a minute: %v, %q; want refused", err, c.allBanners())
	}
	// Joining a pending check is not a new check.
	a2 := w.login(aliceLap, "u1")
	if a2.url(t) == "" {
		t.Fatal("no URL for a joining login")
	}
	// Another caller has its own allowance; the allowance refills.
	w.login(tagged, "u1").url(t)
	w.clock.Advance(30 * time.Second)
	w.login(aliceLap, "u4").url(t)
}

// TestApprovalFollowsTheRule: an approval belongs to the rule that asked
// for it, by the rule's content (RuleID), not by its place: after a reorder
// that moves another rule to the approved one's place, that other rule
// asks again; the approved rule, now elsewhere, goes straight through; and
// a changed rule asks again.
func TestApprovalFollowsTheRule(t *testing.T) {
	w := newWorld(t, nil)
	w.setCheckRule("ssh[0]", "rule-a")
	l := w.login(aliceLap, "deploy")
	approve(t, l.url(t))
	if err := l.wait(t); err != nil {
		t.Fatal(err)
	}

	w.setCheckRule("ssh[0]", "rule-b") // another rule now sits at ssh[0]
	l = w.login(aliceLap, "deploy")
	u := l.url(t) // a new check, not the approval of rule-a
	approve(t, u)
	if err := l.wait(t); err != nil {
		t.Fatal(err)
	}

	w.setCheckRule("ssh[3]", "rule-a") // rule-a, moved down
	if l := w.login(aliceLap, "deploy"); l.wait(t) != nil || l.allBanners() != "" {
		t.Errorf("moved rule: %v, banners %q; want straight through", l.err, l.allBanners())
	}

	w.setCheckRule("ssh[3]", "rule-a2") // the same place, its content changed
	l = w.login(aliceLap, "deploy")
	if u2 := l.url(t); u2 == "" {
		t.Fatal("a changed rule went straight through")
	}
}

// TestHostMustBeTheMeshAddress: a request whose Host is not the address
// its conn reached (a DNS name a web page rebound to the mesh address, so
// that the visitor's browser would carry the visitor's mesh identity) gets
// 421 and nothing of the page; the form cannot be posted that way either.
func TestHostMustBeTheMeshAddress(t *testing.T) {
	w := newWorld(t, nil)
	l := w.login(aliceLap, "deploy")
	u := l.url(t)
	_, _, csrf := page(t, alicePhone, u)
	for _, host := range []string{"rebind.example", "rebind.example:" + portOf(t, u), "localhost"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader(url.Values{"decision": {"approve"}, "csrf": {csrf}}.Encode())
			}
			req, err := http.NewRequest(method, u, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = host
			if method == http.MethodPost {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			resp, err := browser(alicePhone).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusMisdirectedRequest || strings.Contains(string(b), "deploy") {
				t.Errorf("%s with Host %q: %d, want 421 and no details\n%s", method, host, resp.StatusCode, b)
			}
		}
	}
	if !l.waiting() {
		t.Fatalf("the login ended after requests for another host: %v", l.err)
	}
	approve(t, u) // the page's own address still works
	if err := l.wait(t); err != nil {
		t.Error(err)
	}
}

// portOf returns the port of URL u.
func portOf(t *testing.T, u string) string {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	if p := pu.Port(); p != "" {
		return p
	}
	return "80"
}

// TestApprovalFollowsTheCaller: an approval covers the caller as the policy
// named it (owner and tags), not the key alone: once the same key belongs
// to another owner (a node moved in the policy, or on a tailnet), the
// next login is asked again.
func TestApprovalFollowsTheCaller(t *testing.T) {
	state := filepath.Join(t.TempDir(), "check-approvals.json")
	setup := func(c *checkpage.Checker) { c.StateFile = state }
	w := newWorld(t, setup)
	l := w.login(aliceLap, "deploy")
	approve(t, l.url(t))
	if err := l.wait(t); err != nil {
		t.Fatal(err)
	}
	w.restart(setup)
	if l := w.login(aliceLap, "deploy"); l.wait(t) != nil || l.allBanners() != "" {
		t.Fatalf("same owner after restart: %v, banners %q; want straight through", l.err, l.allBanners())
	}
	key := w.keys[aliceLap]
	id := w.ids[key]
	id.Owner = "bob@example.com" // the laptop's key now belongs to bob
	w.ids[key] = id
	w.restart(setup) // before the server's goroutines start again
	l = w.login(aliceLap, "deploy")
	if u := l.url(t); !strings.Contains(u, "/check/") { // fails if the login went straight through
		t.Fatalf("check URL %q", u)
	}
}
