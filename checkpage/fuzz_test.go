package checkpage_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/checkpage"
)

// FuzzDecisionForm posts arbitrary form bodies to a real pending check's
// page, as a browser of the caller's owner: nothing panics or answers 5xx,
// and a login is decided only by a body carrying the check's own form
// token and "approve" or "deny". withToken appends the real token, so the
// fuzzer also explores what lies past the token check.
func FuzzDecisionForm(f *testing.F) {
	f.Add("decision=approve", true)
	f.Add("decision=deny", true)
	f.Add("decision=approve&csrf=AAAAAAAAAAAAAAAAAAAAAA", false)
	f.Add("decision=approve&decision=deny", true)
	f.Add("csrf=%zz&decision=approve", true)
	f.Add(strings.Repeat("a=b&", 2000), true)
	f.Add("decision=APPROVE", true)
	w := newWorld(f, func(c *checkpage.Checker) { c.NewChecksPerMinute = 1 << 20 })
	var u, csrf string
	n := 0
	f.Fuzz(func(t *testing.T, body string, withToken bool) {
		if u == "" {
			// A new pending check, under a new login name: an approval is cached.
			n++
			l := w.login(aliceLap, fmt.Sprintf("fuzz%d", n))
			u = l.url(t)
			_, _, csrf = page(t, alicePhone, u)
		}
		if withToken {
			body += "&csrf=" + csrf
		}
		resp, err := browser(alicePhone).Post(u, "application/x-www-form-urlencoded", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%d for body %q: %s", resp.StatusCode, body, b)
		}
		if resp.StatusCode != http.StatusOK {
			return // still pending: the next input posts to the same check
		}
		form, perr := url.ParseQuery(body)
		d := form.Get("decision")
		if perr != nil || form.Get("csrf") != csrf || (d != "approve" && d != "deny") {
			t.Fatalf("body %q decided the check: %s", body, b)
		}
		u = "" // decided: the next input gets a new check
	})
}
