package sshmesh_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
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
			if r.Key != client.Key.Public() || r.Self != server.Key.Public() {
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
// session on the server at once (the client itself cannot be told:
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
	case <-time.After(endWait):
		t.Fatalf("session of a removed peer still open on the server after %v", endWait)
	}
	if b.endedWithin(time.Second) {
		t.Error("another peer's session ended")
	}
}

// TestLoginRechecksPeer: the peer of a conn is resolved at accept, but the
// mesh can give its address to another key before the login completes
// (SetPeers while the SSH handshake runs; that key could then finish the
// key exchange). The login is refused unless the address still belongs to
// the key the conn was accepted for. Here the policy itself moves A's
// address to B while it decides A's login. (The refusal cannot reach A:
// the mesh routes A's old address to B now, so the server's audit log
// tells.)
func TestLoginRechecksPeer(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 3)
	server, a, b := m.Nodes[0], m.Nodes[1], m.Nodes[2]
	moved := make(chan error, 1)
	var log sshmeshtest.Buffer
	srv := &sshmesh.Server{
		Logger: slog.New(slog.NewTextHandler(&log, nil)),
		Policy: policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
			if r.Key == a.Key.Public() && r.User == "move" {
				var peers []netstack.Peer
				for _, p := range server.Peers() {
					switch p.PublicKey {
					case a.Key.Public():
						continue
					case b.Key.Public():
						p.AllowedIPs = append(p.AllowedIPs, netip.PrefixFrom(a.Addr, 32))
					}
					peers = append(peers, p)
				}
				moved <- server.SetPeers(peers)
			}
			return policy.Decision{Action: policy.Accept, LocalUser: r.User}, nil
		}),
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { s.Exit(0) }),
	}
	sshmeshtest.Serve(t, server, srv)
	// Control: without a move, A logs in.
	if _, err := sshmeshtest.Dial(t, a, server, srv, "stay"); err != nil {
		t.Fatalf("A's login without a move: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := a.Dial(ctx, "tcp", netip.AddrPortFrom(server.Addr, 22).String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second)) // the answer goes to B: end the client
	go ssh.NewClientConn(nc, "server", &ssh.ClientConfig{User: "move", HostKeyCallback: ssh.InsecureIgnoreHostKey()})
	if err := <-moved; err != nil {
		t.Fatal(err)
	}
	log.WaitFor(t, "login refused: the conn's address no longer belongs to its peer")
}

// TestServeNeedsMeshConns: Serve over a listener whose conns do not know
// their peer (a plain TCP listener, without NewListener) does not refuse
// every login in silence: it returns an error that says what to do.
func TestServeNeedsMeshConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := &sshmesh.Server{Policy: allowPolicy(), HostKeys: []ssh.Signer{hostKey(t)}}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "does not know its mesh peer") || !strings.Contains(err.Error(), "NewListener") {
			t.Errorf("Serve = %v; want an error naming the fix", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve still serving a listener without mesh identities")
	}
}

// TestServeChecksPolicyNamesNode: a policy document that does not list the
// server's own node would refuse every login; Serve says so at start.
func TestServeChecksPolicyNamesNode(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 2)
	other := m.Nodes[1]
	doc, err := policy.Parse([]byte(fmt.Sprintf(`{"nodes": {"laptop": {"key": %q, "owner": "ann@example.com"}}, "ssh": []}`, other.Key.Public())), "p.hujson")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := m.Nodes[0].Listen("tcp", ":22")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := &sshmesh.Server{Policy: doc, HostKeys: []ssh.Signer{hostKey(t)}}
	err = srv.Serve(ln)
	if err == nil || !strings.Contains(err.Error(), "the policy does not name this node") || !strings.Contains(err.Error(), m.Nodes[0].Key.Public().String()) {
		t.Errorf("Serve = %v; want the node's key and what is wrong", err)
	}
}
