package sshmesh_test

import (
	"os"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestMeshPortNotOnHost: serving SSH on a node's mesh address opens no TCP
// socket on the host: the port lives only in the process's own stack, so
// nothing off the mesh (and no host firewall mistake) can reach it. The
// process's TCP sockets (from /proc/self/fd and /proc/net/tcp{,6}) are the
// same before and after Serve.
func TestMeshPortNotOnHost(t *testing.T) {
	before := ownTCPSockets(t)
	m := sshmeshtest.NewMesh(t, 2)
	srv := &sshmesh.Server{Policy: allowPolicy(), Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { s.Exit(0) })}
	sshmeshtest.Serve(t, m.Nodes[0], srv)
	if _, err := sshmeshtest.Dial(t, m.Nodes[1], m.Nodes[0], srv, "ann"); err != nil {
		t.Fatal(err)
	}
	if after := ownTCPSockets(t); after != before {
		t.Errorf("the process holds %d TCP sockets on the host after serving on the mesh, %d before", after, before)
	}
}

// ownTCPSockets counts this process's TCP sockets on the host.
func ownTCPSockets(t *testing.T) int {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if fs := strings.Fields(line); len(fs) > 9 && inodes[fs[9]] {
				n++
			}
		}
	}
	return n
}
