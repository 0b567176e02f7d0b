package recorder_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestPageGuards: the page answers only viewers, only on the recorder's
// own addresses, never cross-site, with a strict CSP, and only for paths
// that name a recording.
func TestPageGuards(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.rec.Viewers = []string{"ann@example.com"}
	r.rec.Addrs = r.recNd.Addresses()
	ln, err := r.recNd.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	go r.rec.ServePage(ln)

	// A recording to look at.
	sess, in, out, _ := r.session(t)
	io.WriteString(in, "shown\n")
	in.Close()
	io.ReadAll(out)
	sess.Wait()
	var rel string
	waitFor(t, "the recording", func() bool {
		files := casts(t, r.recDir)
		if len(files) == 1 {
			rel = strings.TrimSuffix(strings.TrimPrefix(files[0], r.recDir+"/"), ".cast")
		}
		return len(files) == 1
	})

	get := func(from *sshmeshtest.Node, host, path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		cl := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return from.Dial(ctx, "tcp", r.recNd.Addr.String()+":80")
		}}}
		req, _ := http.NewRequest("GET", "http://"+host+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	host := r.recNd.Addr.String()
	resp, body := get(r.laptop, host, "/")
	if resp.StatusCode != 200 || !strings.Contains(body, "/play/"+rel) {
		t.Fatalf("viewer's list: %d %q", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe-eval'") && !strings.Contains(csp, "wasm-unsafe-eval") {
		t.Errorf("CSP %q", csp)
	}
	if resp, body := get(r.laptop, host+":80", "/cast/"+rel); resp.StatusCode != 200 || !strings.Contains(body, "shown") {
		t.Errorf("viewer's cast: %d %q", resp.StatusCode, body)
	}
	if !strings.Contains(r.recLog.String(), "recording viewed") || !strings.Contains(r.recLog.String(), "viewer=laptop") {
		t.Errorf("the view is not in the log:\n%s", r.recLog.String())
	}
	for _, c := range []struct {
		name       string
		from       *sshmeshtest.Node
		host, path string
		hdr        []string
		want       int
	}{
		{"a node that is not a viewer", r.srv, host, "/", nil, http.StatusForbidden},
		{"another node fetching the cast", r.mesh.Nodes[3], host, "/cast/" + rel, nil, http.StatusForbidden},
		{"a rebound name", r.laptop, "recorder.attacker.example", "/", nil, http.StatusMisdirectedRequest},
		{"another address", r.laptop, "127.0.0.1", "/cast/" + rel, nil, http.StatusMisdirectedRequest},
		{"cross-site", r.laptop, host, "/cast/" + rel, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"traversal", r.laptop, host, "/cast/srv/..%2f..%2fetc/passwd", nil, http.StatusNotFound},
		{"bad date", r.laptop, host, "/cast/srv/x/y", nil, http.StatusNotFound},
		{"unknown asset", r.laptop, host, "/assets/../server.go", nil, http.StatusNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, body := get(c.from, c.host, c.path, c.hdr...)
			if res.StatusCode != c.want {
				t.Errorf("status %d, want %d: %s", res.StatusCode, c.want, body)
			}
			if c.want != 200 && strings.Contains(body, "shown") {
				t.Errorf("the recording leaked: %q", body)
			}
		})
	}
}
