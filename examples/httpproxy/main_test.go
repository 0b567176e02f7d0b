package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sshmesh/sshmesh/examples/internal/exampletest"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestProxy runs the proxy from a wg-quick file and a policy, with a test
// backend on loopback, and calls it with a real http.Client over other
// in-process nodes: a known node sees its identity reach the backend (with
// forged X-Mesh-* headers removed), a node the policy does not list gets 403.
func TestProxy(t *testing.T) {
	type seen struct {
		Key, Node, Owner, Tags string
		Forged                 []string
	}
	hits := make(chan seen, 10)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{Key: r.Header.Get("X-Mesh-Key"), Node: r.Header.Get("X-Mesh-Node"),
			Owner: r.Header.Get("X-Mesh-Owner"), Tags: r.Header.Get("X-Mesh-Tags"),
			Forged: r.Header.Values("X-Mesh-Admin")}
		for _, name := range []string{"X-Mesh-Key", "X-Mesh-Node", "X-Mesh-Owner"} {
			if n := len(r.Header.Values(name)); n != 1 {
				s.Forged = append(s.Forged, fmt.Sprintf("%s x%d", name, n))
			}
		}
		hits <- s
		json.NewEncoder(w).Encode(s)
	}))
	defer backend.Close()

	m := sshmeshtest.NewMesh(t, 3)
	proxy, laptop, stranger := m.Nodes[0], m.Nodes[1], m.Nodes[2]
	proxy.Node.Close() // run() brings this node up from its file
	dir := t.TempDir()
	conf := proxy.WriteWGQuick(t, filepath.Join(dir, "proxy.conf"))
	polPath := filepath.Join(dir, "policy.hujson")
	pol := fmt.Sprintf(`{
  "nodes": {
    "proxy":  {"key": %q, "tags": ["tag:web", "tag:prod"]},
    "laptop": {"key": %q, "owner": "alice@example.com"},
  },
  "tagOwners": {"tag:web": ["alice@example.com"], "tag:prod": ["alice@example.com"]},
}`, proxy.Key.Public(), laptop.Key.Public())
	if err := os.WriteFile(polPath, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}

	exampletest.Run(t, "proxy serving", func(ctx context.Context, logger *slog.Logger) error {
		return run(ctx, options{wgPath: conf, policyPath: polPath, backend: backend.URL, port: 80}, logger)
	})

	get := func(from *sshmeshtest.Node, forge bool) (int, string) {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{DialContext: from.Dial}, Timeout: 30 * time.Second}
		req, _ := http.NewRequest("GET", "http://100.64.0.1/whoami", nil)
		if forge {
			req.Header.Set("X-Mesh-Owner", "root@example.com")
			req.Header["x-mesh-node"] = []string{"proxy"} // not canonical: still one header
			req.Header.Add("X-Mesh-Key", stranger.Key.Public().String())
			req.Header.Set("X-Mesh-Admin", "yes")
			req.Header.Set("Connection", "X-Mesh-Owner")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	want := seen{Key: laptop.Key.Public().String(), Node: "laptop", Owner: "alice@example.com"}
	for _, forge := range []bool{false, true} {
		code, body := get(laptop, forge)
		if code != 200 {
			t.Fatalf("laptop (forged headers %v): %d %s", forge, code, body)
		}
		if diff := cmp.Diff(want, <-hits); diff != "" {
			t.Errorf("backend saw (forged headers %v) (-want +got):\n%s", forge, diff)
		}
	}

	code, body := get(stranger, true)
	if code != http.StatusForbidden {
		t.Errorf("a node the policy does not list: %d %s; want 403", code, body)
	}
	select {
	case s := <-hits:
		t.Errorf("the backend was called for an unknown node: %+v", s)
	default:
	}
}
