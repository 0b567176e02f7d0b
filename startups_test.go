package sshmesh_test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/internal/testkit"
)

// TestCloseLogsUnauthenticatedConns: the server closes no conn before
// authentication without saying why in its log. When it closes, a conn
// stuck in the handshake and the conns waiting in the startup queue each
// get a "conn closed" line with a reason.
func TestCloseLogsUnauthenticatedConns(t *testing.T) {
	var logs testkit.Buffer
	srv := &sshmesh.Server{MaxStartupsPerPeer: 1, Logger: logs.Logger(), Handler: sshmesh.HandlerFunc(func(*sshmesh.Session) {})}
	ts := startServer(t, srv)
	dial := func() net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: clientAddr.AsSlice()}}
		nc, err := d.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	// The first conn takes the peer's one startup slot: the server speaks
	// on it, and it says nothing back.
	first := dial()
	first.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(first, make([]byte, len("SSH-2.0-"))); err != nil {
		t.Fatalf("no server banner on the first conn: %v", err)
	}
	// The next two wait in the queue.
	dial()
	dial()
	waitLogCount(t, &logs, "conn waits for a startup slot", 2)

	srv.Close()
	waitLogCount(t, &logs, `reason="server shut down while the conn waited for a startup slot"`, 2)
	waitLogCount(t, &logs, `reason="server closed"`, 1)
	if n := strings.Count(logs.String(), `msg="conn closed"`); n != 3 {
		t.Errorf("%d conn closed lines, want 3:\n%s", n, logs.String())
	}
}

// waitLogCount waits up to 20 s for s to appear n times in logs.
func waitLogCount(t *testing.T, logs *testkit.Buffer, s string, n int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Count(logs.String(), s) >= n {
			return
		}
	}
	t.Fatalf("%q not %d times within 20 s in:\n%s", s, n, logs.String())
}
