// Package sshmeshtest gives tests real mesh nodes: in-process WireGuard
// nodes (package netstack) that talk over loopback UDP with real crypto,
// and an sshmesh.Server serving one of them.
package sshmeshtest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
)

// Node is one test node with its keys and config.
type Node struct {
	*netstack.Node
	Key    meshkey.Private // the node's private key
	Addr   netip.Addr      // its mesh address, 100.64.0.N
	Config netstack.Config // the config it was started with (see WriteWGQuick)
}

// Mesh is a set of nodes that all know each other.
type Mesh struct {
	Nodes []*Node // in the order of their addresses
}

// NewMesh starts n nodes on 127.0.0.1, with mesh addresses 100.64.0.1,
// 100.64.0.2, ..., each a peer of every other, and closes them at the end
// of the test. Each node's UDP port is the one the kernel gave it (no
// other test can take it between a pick and the bind).
func NewMesh(tb testing.TB, n int) *Mesh {
	tb.Helper()
	m := &Mesh{}
	for i := range n {
		k, err := meshkey.NewPrivate()
		if err != nil {
			tb.Fatal(err)
		}
		addr := netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)})
		nd := &Node{Key: k, Addr: addr, Config: netstack.Config{
			PrivateKey:  k,
			Addresses:   []netip.Prefix{netip.PrefixFrom(addr, 32)},
			BindAddress: netip.MustParseAddr("127.0.0.1"),
		}}
		nd.Node, err = netstack.New(nd.Config)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { nd.Node.Close() })
		nd.Config.ListenPort = nd.Node.ListenPort()
		m.Nodes = append(m.Nodes, nd)
	}
	for _, a := range m.Nodes {
		for _, b := range m.Nodes {
			if a != b {
				a.Config.Peers = append(a.Config.Peers, netstack.Peer{
					PublicKey:  b.Key.Public(),
					AllowedIPs: []netip.Prefix{netip.PrefixFrom(b.Addr, 32)},
					Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.Config.ListenPort),
				})
			}
		}
		if err := a.SetPeers(a.Config.Peers); err != nil {
			tb.Fatal(err)
		}
	}
	return m
}

// WriteWGQuick writes n's config as a wg-quick file at path (mode 0600)
// and returns path, for a program that runs the node from a file, such as
// `sshmesh serve --wg`. Close n first so that the program can take its
// port.
func (n *Node) WriteWGQuick(tb testing.TB, path string) string {
	tb.Helper()
	c := testkit.WGQuick{PrivateKey: n.Key, Addresses: n.Config.Addresses, ListenPort: n.Config.ListenPort}
	for _, p := range n.Config.Peers {
		c.Peers = append(c.Peers, testkit.WGPeer{PublicKey: p.PublicKey, AllowedIPs: p.AllowedIPs, Endpoint: p.Endpoint})
	}
	return c.Write(tb, path)
}

// Serve serves srv on node's port 22 (giving it a fresh host key when it has
// none) and shuts it down at the end of the test.
func Serve(tb testing.TB, node *Node, srv *sshmesh.Server) {
	tb.Helper()
	if len(srv.HostKeys) == 0 {
		k, err := sshmesh.LoadOrCreateHostKey(tb.TempDir() + "/hostkey")
		if err != nil {
			tb.Fatal(err)
		}
		srv.HostKeys = []ssh.Signer{k}
	}
	ln, err := node.Listen("tcp", ":22")
	if err != nil {
		tb.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	tb.Cleanup(func() {
		srv.Close()
		if err := <-errc; !errors.Is(err, sshmesh.ErrServerClosed) {
			tb.Errorf("Serve: %v", err)
		}
	})
}

// Dial opens an SSH client conn from client to server's port 22 over the
// mesh, logging in as user, and closes it at the end of the test.
func Dial(tb testing.TB, client, server *Node, srv *sshmesh.Server, user string) (*ssh.Client, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addr := netip.AddrPortFrom(server.Addr, 22).String()
	nc, err := client.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s over the mesh: %w", addr, err)
	}
	c, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{
		User:            user,
		HostKeyCallback: ssh.FixedHostKey(srv.HostKeys[0].PublicKey()),
		Timeout:         20 * time.Second,
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	cl := ssh.NewClient(c, chans, reqs)
	tb.Cleanup(func() { cl.Close() })
	return cl, nil
}
