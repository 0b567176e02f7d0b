package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
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
	for _, tc := range []struct{ host, port, want string }{
		{down.Addr.String(), "22", "no WireGuard handshake with " + down.Addr.String()},
		{server.Addr.String(), "23", "WireGuard works, but the TCP connection failed"},
		{"100.64.9.9", "22", "no [Peer] in " + conf + " has AllowedIPs covering 100.64.9.9"},
	} {
		var stderr bytes.Buffer
		code := run(context.Background(), []string{"nc", "--wg", conf, "--no-browser", "--timeout", "3s", tc.host, tc.port},
			stdio{strings.NewReader(""), &bytes.Buffer{}, &stderr})
		if code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("nc %s %s: exit %d, stderr %q; want %q", tc.host, tc.port, code, stderr.String(), tc.want)
		}
	}
}
