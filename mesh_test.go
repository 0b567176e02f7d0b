package sshmesh_test

import (
	"context"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestOverMesh logs in over two real in-process WireGuard nodes: the
// identity the handler sees is the client node's key, found from the
// conn's mesh source address.
func TestOverMesh(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 3)
	server, client, stranger := m.Nodes[0], m.Nodes[1], m.Nodes[2]
	srv := &sshmesh.Server{
		Policy: policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
			if r.Src != client.Key.Public() || r.Dst != server.Key.Public() {
				return policy.Decision{Message: "only the client node"}, nil
			}
			return policy.Decision{Action: policy.Accept, LocalUser: r.User}, nil
		}),
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
			io.WriteString(s, s.Identity().Key.String()+" "+s.Identity().Addr.Addr().String())
			s.Exit(7)
		}),
	}
	sshmeshtest.Serve(t, server, srv)

	c, err := sshmeshtest.Dial(t, client, server, srv, "ann")
	if err != nil {
		t.Fatal(err)
	}
	sess, _ := c.NewSession()
	out, err := sess.Output("x")
	if code := exitCode(err); code != 7 {
		t.Fatalf("exit %d (%v), want 7", code, err)
	}
	if want := client.Key.Public().String() + " " + client.Addr.String(); string(out) != want {
		t.Errorf("handler saw %q, want %q", out, want)
	}
	if _, err := sshmeshtest.Dial(t, stranger, server, srv, "ann"); err == nil {
		t.Error("a node the policy does not accept got in")
	}
}

// BenchmarkSessionSetup measures dial + handshake + exec + exit over the mesh.
func BenchmarkSessionSetup(b *testing.B) {
	m := sshmeshtest.NewMesh(b, 2)
	srv := &sshmesh.Server{Policy: allowPolicy(), Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {})}
	sshmeshtest.Serve(b, m.Nodes[0], srv)
	for b.Loop() {
		c, err := sshmeshtest.Dial(b, m.Nodes[1], m.Nodes[0], srv, "ann")
		if err != nil {
			b.Fatal(err)
		}
		sess, _ := c.NewSession()
		if err := sess.Run("true"); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkChannelThroughput streams 64 MiB through one session channel,
// over the mesh and over plain loopback TCP in the same run.
func BenchmarkChannelThroughput(b *testing.B) {
	const size = 64 << 20
	handler := sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		buf := make([]byte, 32<<10)
		for n := 0; n < size; n += len(buf) {
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	})
	run := func(b *testing.B, dial func() (*ssh.Client, error)) {
		b.SetBytes(size)
		for b.Loop() {
			c, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			sess, _ := c.NewSession()
			r, _ := sess.StdoutPipe()
			sess.Start("x")
			h := sha256.New()
			n, _ := io.Copy(h, r)
			if n != size {
				b.Fatalf("got %d bytes", n)
			}
			sess.Wait()
			c.Close()
		}
	}
	b.Run("mesh", func(b *testing.B) {
		m := sshmeshtest.NewMesh(b, 2)
		srv := &sshmesh.Server{Policy: allowPolicy(), Handler: handler}
		sshmeshtest.Serve(b, m.Nodes[0], srv)
		run(b, func() (*ssh.Client, error) { return sshmeshtest.Dial(b, m.Nodes[1], m.Nodes[0], srv, "ann") })
	})
	b.Run("loopback", func(b *testing.B) {
		ts := startServer(b, &sshmesh.Server{Handler: handler})
		run(b, func() (*ssh.Client, error) { return ts.dialFrom(b, clientAddr, "ann", nil) })
	})
}

// TestPeerRemovedEndsSessions: SetPeers without the client ends its open
// session on the server within a second (the client itself cannot be told:
// the mesh no longer routes to it); another peer's session goes on.
func TestPeerRemovedEndsSessions(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 3)
	server, gone, stays := m.Nodes[0], m.Nodes[1], m.Nodes[2]
	ended := make(chan string, 2)
	srv := &sshmesh.Server{Policy: allowPolicy(), Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		io.WriteString(s, "ready\n")
		<-s.Context().Done()
		ended <- s.Identity().Key.String()
	})}
	sshmeshtest.Serve(t, server, srv)
	open := func(n *sshmeshtest.Node) *openSession {
		c, err := sshmeshtest.Dial(t, n, server, srv, "ann")
		if err != nil {
			t.Fatal(err)
		}
		return startBlockingOn(t, c)
	}
	open(gone)
	b := open(stays)
	var keep []netstack.Peer
	for _, p := range server.Peers() {
		if p.PublicKey != gone.Key.Public() {
			keep = append(keep, p)
		}
	}
	if err := server.SetPeers(keep); err != nil {
		t.Fatal(err)
	}
	select {
	case k := <-ended:
		if k != gone.Key.Public().String() {
			t.Fatalf("the session of %s ended, want the removed peer's", k)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("session of a removed peer still open on the server after 2 s")
	}
	if b.endedWithin(time.Second) {
		t.Error("another peer's session ended")
	}
}
