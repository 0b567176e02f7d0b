package sshmesh_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

// A server node serves SSH with a Go function as the session; a client node
// logs in with golang.org/x/crypto/ssh and no SSH key: the policy knows the
// client by its WireGuard key. Both nodes run in this process and talk
// WireGuard over loopback UDP.
func ExampleServer_Serve() {
	serverKey, _ := meshkey.NewPrivate()
	clientKey, _ := meshkey.NewPrivate()
	loopback := netip.MustParseAddr("127.0.0.1")

	// The server node, 100.64.0.1 on the mesh. In a program:
	// cfg, _, err := netstack.LoadConfig("server.conf") (a wg-quick file).
	server, err := netstack.New(netstack.Config{
		PrivateKey:  serverKey,
		Addresses:   []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
		BindAddress: loopback,
		Peers: []netstack.Peer{{
			PublicKey:  clientKey.Public(),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")},
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()

	// Who may log in: the client node is alice's laptop; alice may log in
	// to tagged servers as "alice" ("=" is her email's local part).
	doc, err := policy.Parse(fmt.Appendf(nil, `{
	  "nodes": {
	    "srv":          {"key": %q, "tags": ["tag:server"]},
	    "alice-laptop": {"key": %q, "owner": "alice@example.com"},
	  },
	  "tagOwners": {"tag:server": ["alice@example.com"]},
	  "ssh": [{"action": "accept", "src": ["alice-laptop"], "dst": ["tag:server"], "users": ["="]}],
	}`, serverKey.Public(), clientKey.Public()), "policy.hujson")
	if err != nil {
		log.Fatal(err)
	}

	_, priv, _ := ed25519.GenerateKey(rand.Reader) // or sshmesh.LoadOrCreateHostKey(path)
	hostKey, _ := ssh.NewSignerFromKey(priv)
	srv := &sshmesh.Server{
		Policy:   doc,
		HostKeys: []ssh.Signer{hostKey},
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
			id := s.Identity()
			fmt.Fprintf(s, "hello %s from %s, logged in as %s, running %q\n", id.Owner, id.Node, s.LocalUser(), s.RawCommand())
			s.Exit(3)
		}),
	}
	ln, err := server.Listen("tcp", ":22")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// The client node, 100.64.0.2, and an SSH login over it.
	client, err := netstack.New(netstack.Config{
		PrivateKey:  clientKey,
		Addresses:   []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")},
		BindAddress: loopback,
		Peers: []netstack.Peer{{
			PublicKey:  serverKey.Public(),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
			Endpoint:   netip.AddrPortFrom(loopback, server.ListenPort()),
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, "tcp", "100.64.0.1:22")
	if err != nil {
		log.Fatal(err)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, "100.64.0.1:22", &ssh.ClientConfig{
		User:            "alice",
		HostKeyCallback: ssh.FixedHostKey(hostKey.PublicKey()),
	})
	if err != nil {
		log.Fatal(err)
	}
	sc := ssh.NewClient(c, chans, reqs)
	sess, err := sc.NewSession()
	if err != nil {
		log.Fatal(err)
	}
	out, err := sess.Output("uptime")
	fmt.Print(string(out))
	var exit *ssh.ExitError
	if errors.As(err, &exit) {
		fmt.Println("exit status", exit.ExitStatus())
	}
	sc.Close()

	// Shutdown waits for open sessions; Serve then returns ErrServerClosed.
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(errors.Is(<-served, sshmesh.ErrServerClosed))
	// Output:
	// hello alice@example.com from alice-laptop, logged in as alice, running "uptime"
	// exit status 3
	// true
}

// NewListener works over any net.Listener whose source addresses a
// PeerResolver can map to WireGuard keys. A *netstack.Node is one; here a
// table of allowed IPs plays that part for a listener on a kernel WireGuard
// interface (wg-quick). The example listens on 127.0.0.1 so that it runs
// anywhere; do not trust loopback addresses like this in a program.
func ExampleNewListener() {
	laptop, _ := meshkey.NewPrivate()
	table := allowedIPs{netip.MustParsePrefix("127.0.0.1/32"): laptop.Public()} // e.g. 100.64.0.2/32 on wg0

	inner, err := net.Listen("tcp", "127.0.0.1:0") // e.g. "100.64.0.1:22", wg0's address
	if err != nil {
		log.Fatal(err)
	}
	ln := sshmesh.NewListener(inner, table, nil)
	defer ln.Close()

	go func() {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1)) // hold the conn until the server closes it
		}
	}()
	conn, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	peer, ok := sshmesh.PeerOf(conn) // what Server.Serve does with each conn
	fmt.Println(ok, peer.Key == laptop.Public(), peer.Addr.Addr())
	// Output: true true 127.0.0.1
}

// allowedIPs is a PeerResolver from a peer table such as a wg-quick file's
// [Peer] AllowedIPs; a real one picks the longest matching prefix.
type allowedIPs map[netip.Prefix]meshkey.Public

func (t allowedIPs) PeerForAddr(a netip.Addr) (meshkey.Public, bool) {
	for p, k := range t {
		if p.Contains(a) {
			return k, true
		}
	}
	return meshkey.Public{}, false
}

// A middleware around any handler: here, a line in the log per session.
func ExampleChain() {
	logSessions := func(next sshmesh.Handler) sshmesh.Handler {
		return sshmesh.HandlerFunc(func(s *sshmesh.Session) {
			start := time.Now()
			next.ServeSSH(s)
			log.Printf("session of %s as %s took %s", s.Identity().Name(), s.LocalUser(), time.Since(start))
		})
	}
	srv := &sshmesh.Server{
		Handler: sshmesh.Chain(sshmesh.LoginHandler(), logSessions),
		// Policy, HostKeys, ...
	}
	_ = srv
}

// A daemon serving login shells, as sshd does, to the mesh's nodes that
// its policy file lets in: the node from a wg-quick file, the policy from
// a HuJSON file, an ed25519 host key kept in a file, and Serve on the
// node's listener as it is. (Compiled, not run: it needs the files, and
// root to log in as other users; examples/daemon runs it for real.)
func Example_daemon() {
	cfg, warnings, err := netstack.LoadConfig("/etc/sshmesh/server.conf")
	if err != nil {
		log.Fatal(err)
	}
	for _, w := range warnings {
		log.Print(w)
	}
	node, err := netstack.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()
	doc, err := policy.Load("/etc/sshmesh/policy.hujson")
	if err != nil {
		log.Fatal(err)
	}
	hostKey, err := sshmesh.LoadOrCreateHostKey("/var/lib/sshmesh/ssh_host_ed25519_key")
	if err != nil {
		log.Fatal(err)
	}
	ln, err := node.Listen("tcp", ":22")
	if err != nil {
		log.Fatal(err)
	}
	srv := &sshmesh.Server{Policy: doc, HostKeys: []ssh.Signer{hostKey}} // Handler nil: login shells
	log.Fatal(srv.Serve(ln))
}
