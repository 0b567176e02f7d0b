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

const (
	testToken    = "AAAAAAAAAAAAAAAAAAAAAA"
	testLinkHost = "s0123456789ab.localhost"
)

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
	l, err := startLocalLink("http://100.64.0.1/check/"+testToken, testLinkHost, dial, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, up
}

// linkDo sends a request to the link l at path, with Host host ("": the
// link's own) and Origin origin ("": none).
func linkDo(t *testing.T, l *localLink, method, path, host, origin string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+l.ln[0].Addr().String()+path, nil)
	req.Host = strings.TrimPrefix(strings.TrimSuffix(l.URL, l.prefix), "http://")
	if host != "" {
		req.Host = host
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
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
	if !strings.HasPrefix(l.URL, "http://"+testLinkHost+":") || !strings.HasSuffix(l.URL, "/check/"+testToken) {
		t.Fatalf("URL %s", l.URL)
	}
	hostPort := strings.TrimPrefix(strings.TrimSuffix(l.URL, "/check/"+testToken), "http://")
	port := strings.Split(hostPort, ":")[1]
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
		{"GET", "/check/" + testToken, "evil.example:" + port, "", 421},
		{"GET", "/check/" + testToken, "localhost:" + port, "", 421},
		{"GET", "/check/" + testToken, "127.0.0.1:" + port, "", 421},
		{"GET", "/check/" + testToken, "s000000000000.localhost:" + port, "", 421},
		{"GET", "/check/" + testToken, testLinkHost + ":1", "", 421},
		{"POST", "/check/" + testToken, "", "http://evil.example", 403},
		{"POST", "/check/" + testToken, "", "https://" + hostPort, 403},
		{"POST", "/check/" + testToken, "", "http://localhost:" + port, 403},
	} {
		code, body := linkDo(t, l, c.method, c.path, c.host, c.origin)
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
	if code, _ := linkDo(t, l, "POST", l.prefix+"/done", "", ""); code != 200 {
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
