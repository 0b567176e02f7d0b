package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestNCExplainsFailures: when the mesh dial fails, nc says why in words a
// user can act on.
func TestNCExplainsFailures(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 3)
	server, client, down := m.Nodes[0], m.Nodes[1], m.Nodes[2]
	down.Node.Close() // its endpoint answers nothing
	client.Node.Close()
	conf := client.WriteWGQuick(t, filepath.Join(t.TempDir(), "client.conf"))
	// The client's ListenPort is taken (as by the previous nc of a quick
	// script): nc takes another port and still reaches the server.
	busy, err := net.ListenPacket("udp", fmt.Sprintf(":%d", client.Config.ListenPort))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct{ host, port, timeout, want string }{
		{down.Addr.String(), "22", "3s", "no WireGuard handshake with " + down.Addr.String()},
		{server.Addr.String(), "23", "3s", "WireGuard works, but the TCP connection failed"},
		{"100.64.9.9", "22", "3s", "no [Peer] in " + conf + " has AllowedIPs covering 100.64.9.9"},
		// A dial that takes long says what it waits for, after a quarter
		// of its timeout (at most 3 s), before it gives up.
		{down.Addr.String(), "22", "8s", "sshmesh nc: still waiting for a WireGuard handshake with " + down.Addr.String() +
			" (peer " + down.Key.Public().Short() + ", endpoint 127.0.0.1:" + fmt.Sprint(down.Config.ListenPort) + ")..."},
	} {
		var stderr bytes.Buffer
		code := run(context.Background(), []string{"nc", "--wg", conf, "--no-browser", "--timeout", tc.timeout, tc.host, tc.port},
			stdio{strings.NewReader(""), &bytes.Buffer{}, &stderr})
		if code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("nc %s %s: exit %d, stderr %q; want %q", tc.host, tc.port, code, stderr.String(), tc.want)
		}
	}
}

// TestOthersCanRead: a wg-quick file others may read gets a warning that
// says what to do, as wg-quick's does; a 0600 one none.
func TestOthersCanRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "laptop.conf")
	os.WriteFile(p, []byte("[Interface]\n"), 0o600)
	os.Chmod(p, 0o644)
	if w := othersCanRead(p); !strings.Contains(w, "mode 0644") || !strings.Contains(w, "chmod 600 "+p) {
		t.Errorf("0644: %q", w)
	}
	os.Chmod(p, 0o600)
	if w := othersCanRead(p); w != "" {
		t.Errorf("0600: %q", w)
	}
}
