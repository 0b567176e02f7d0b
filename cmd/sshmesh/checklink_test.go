package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/checkpage"
)

const testToken = "AAAAAAAAAAAAAAAAAAAAAA"

// startTestLink starts a local link to an upstream page that echoes the
// path it got and says the check is pending, unless the path ends in /done.
func startTestLink(t *testing.T) (*localLink, *httptest.Server) {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := "pending"
		if strings.HasSuffix(r.URL.Path, "/done") {
			st = "approved"
		}
		w.Header().Set(checkpage.StateHeader, st)
		io.WriteString(w, r.Method+" "+r.Host+" "+r.URL.Path)
	}))
	t.Cleanup(up.Close)
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, up.Listener.Addr().String())
	}
	l, err := startLocalLink("http://100.64.0.1/check/"+testToken, dial, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, up
}

func linkDo(t *testing.T, method, u, host, origin string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	if host != "" {
		req.Host = host
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestLocalLinkForwardsOnlyItsCheck: the link forwards its own check's
// path (and what lies under it) to the page's mesh address, and refuses
// other paths, methods, hosts (DNS rebinding) and foreign origins.
func TestLocalLinkForwardsOnlyItsCheck(t *testing.T) {
	l, _ := startTestLink(t)
	if !strings.HasPrefix(l.URL, "http://localhost:") || !strings.HasSuffix(l.URL, "/check/"+testToken) {
		t.Fatalf("URL %s", l.URL)
	}
	base := strings.TrimSuffix(l.URL, "/check/"+testToken)
	ip := strings.Replace(base, "localhost", "127.0.0.1", 1)
	hostPort := strings.TrimPrefix(base, "http://")
	for _, c := range []struct {
		method, path, host, origin string
		code                       int
	}{
		{"GET", "/check/" + testToken, "", "", 200},
		{"POST", "/check/" + testToken + "/passkey/begin", "", "http://" + hostPort, 200},
		{"GET", "/check/" + testToken + "x", "", "", 404},
		{"GET", "/check/BBBBBBBBBBBBBBBBBBBBBB", "", "", 404},
		{"GET", "/", "", "", 404},
		{"GET", "/check/" + testToken + "?a=b", "", "", 404},
		{"DELETE", "/check/" + testToken, "", "", 405},
		{"GET", "/check/" + testToken, "evil.example:" + strings.Split(hostPort, ":")[1], "", 421},
		{"GET", "/check/" + testToken, "localhost:1", "", 421},
		{"POST", "/check/" + testToken, "", "http://evil.example", 403},
		{"POST", "/check/" + testToken, "", "https://" + hostPort, 403},
	} {
		code, body := linkDo(t, c.method, ip+c.path, c.host, c.origin)
		if code != c.code {
			t.Errorf("%s %s (Host %q, Origin %q): %d %q, want %d", c.method, c.path, c.host, c.origin, code, body, c.code)
		}
		if code == 200 && body != c.method+" 100.64.0.1 "+c.path {
			t.Errorf("%s %s: upstream got %q", c.method, c.path, body)
		}
	}
}

// TestLocalLinkStopsWithItsCheck: once the page says the check is no
// longer pending, the link delivers that answer and stops.
func TestLocalLinkStopsWithItsCheck(t *testing.T) {
	l, _ := startTestLink(t)
	if code, _ := linkDo(t, "POST", l.URL+"/done", "", ""); code != 200 {
		t.Fatalf("final answer: %d", code)
	}
	addr := l.ln[0].Addr().String()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the link still accepts conns 20 s after its check ended")
		}
	}
}
