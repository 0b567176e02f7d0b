package netstack_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
)

// pair is two nodes: A listens, B dials; A holds no endpoint for B.
type pair struct {
	ka, kb meshkey.Private
	a, b   *netstack.Node
}

func newPair(t testing.TB) *pair {
	t.Helper()
	return newPairGRO(t, true)
}

// newPairGRO is newPair with GRO on or off (Config.DisableGRO) on both nodes.
func newPairGRO(t testing.TB, gro bool) *pair {
	t.Helper()
	p := &pair{ka: newKey(t), kb: newKey(t)}
	p.a = newNode(t, netstack.Config{
		PrivateKey: p.ka,
		DisableGRO: !gro,
		Addresses:  []netip.Prefix{pfx("100.64.0.1/32"), pfx("fd7a::1/128")},
		Peers: []netstack.Peer{{
			PublicKey:  p.kb.Public(),
			AllowedIPs: []netip.Prefix{pfx("100.64.0.2/32"), pfx("fd7a::2/128")},
		}},
	})
	p.b = newNode(t, netstack.Config{
		PrivateKey: p.kb,
		DisableGRO: !gro,
		Addresses:  []netip.Prefix{pfx("100.64.0.2/32"), pfx("fd7a::2/128")},
		Peers: []netstack.Peer{{
			PublicKey:  p.ka.Public(),
			AllowedIPs: []netip.Prefix{pfx("100.64.0.0/24"), pfx("fd7a::/64")},
			Endpoint:   endpointOf(p.a),
		}},
	})
	if err := p.b.WaitHandshake(testCtx(t, 10*time.Second), p.ka.Public()); err != nil {
		t.Fatal(err)
	}
	return p
}

func remoteAddr(t testing.TB, c net.Conn) netip.Addr {
	t.Helper()
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("RemoteAddr is %T, want *net.TCPAddr", c.RemoteAddr())
	}
	return ta.AddrPort().Addr().Unmap()
}

// TestTwoNodes moves 1 MiB each way between two nodes and checks that the
// listener resolves the dialer's key from the conn's source address.
func TestTwoNodes(t *testing.T) {
	p := newPair(t)
	for _, tc := range []struct{ name, network, listen, dial string }{
		{"ipv4", "tcp", ":7000", "100.64.0.1:7000"},
		{"ipv6", "tcp", ":7001", "[fd7a::1]:7001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := p.a.Listen(tc.network, tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			acc := acceptAll(t, l)
			c, err := p.b.Dial(testCtx(t, 10*time.Second), "tcp", tc.dial)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := acc.next(t, 10*time.Second)
			key, ok := p.a.PeerForAddr(remoteAddr(t, s))
			if !ok || key != p.kb.Public() {
				t.Fatalf("PeerForAddr(%v) = %v, %v; want B's key %v", remoteAddr(t, s), key, ok, p.kb.Public())
			}

			const size = 1 << 20
			up, down := randBytes(t, size), randBytes(t, size)
			errc := make(chan error, 2)
			gotUp, gotDown := make(chan [32]byte, 1), make(chan [32]byte, 1)
			// A echoes nothing: each side writes its payload and reads the other's.
			go func() { _, err := s.Write(down); errc <- err }()
			go func() { _, err := c.Write(up); errc <- err }()
			go func() { gotUp <- readSum(s, size) }()
			go func() { gotDown <- readSum(c, size) }()
			for range 2 {
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			if got, want := <-gotUp, sha256.Sum256(up); got != want {
				t.Errorf("B→A: sha256 %x, want %x", got, want)
			}
			if got, want := <-gotDown, sha256.Sum256(down); got != want {
				t.Errorf("A→B: sha256 %x, want %x", got, want)
			}
		})
	}
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// readSum reads n bytes from r and returns their SHA-256 (zero on error).
func readSum(r io.Reader, n int64) [32]byte {
	h := sha256.New()
	if _, err := io.CopyN(h, r, n); err != nil {
		return [32]byte{}
	}
	return [32]byte(h.Sum(nil))
}

// echo answers one line per line it reads, until the conn breaks.
func echo(c net.Conn) {
	go func() { _, _ = io.Copy(c, c) }()
}

// roundTrip writes msg to c and expects it back within d.
func roundTrip(c net.Conn, msg string, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch")
	}
	return nil
}

func TestListenNetworks(t *testing.T) {
	p := newPair(t)
	for _, tc := range []struct{ network, listen, dial string }{
		{"tcp", ":1000", "100.64.0.1:1000"},
		{"tcp", ":1001", "[fd7a::1]:1001"},
		{"tcp4", ":1002", "100.64.0.1:1002"},
		{"tcp6", ":1003", "[fd7a::1]:1003"},
		{"tcp", "100.64.0.1:1004", "100.64.0.1:1004"},
		{"tcp6", "[fd7a::1]:1005", "[fd7a::1]:1005"},
		{"tcp", "0.0.0.0:1006", "100.64.0.1:1006"},
	} {
		t.Run(tc.network+" "+tc.listen+" "+tc.dial, func(t *testing.T) {
			l, err := p.a.Listen(tc.network, tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			acc := acceptAll(t, l)
			c, err := p.b.Dial(testCtx(t, 10*time.Second), "tcp", tc.dial)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := acc.next(t, 10*time.Second)
			if got, want := s.LocalAddr().String(), tc.dial; got != want {
				t.Errorf("LocalAddr = %s, want %s", got, want)
			}
			if key, ok := p.a.PeerForAddr(remoteAddr(t, s)); !ok || key != p.kb.Public() {
				t.Errorf("PeerForAddr = %v, %v; want B", key, ok)
			}
			l.Close()
		})
	}
	t.Run("tcp4 listener refuses IPv6", func(t *testing.T) {
		l, err := p.a.Listen("tcp4", ":1100")
		if err != nil {
			t.Fatal(err)
		}
		acc := acceptAll(t, l)
		c, err := p.b.Dial(testCtx(t, 10*time.Second), "tcp", "[fd7a::1]:1100")
		if err == nil {
			// The stack completes the handshake; the listener closes the conn.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Error("IPv6 conn to a tcp4 listener stayed open")
			}
			c.Close()
		}
		select {
		case s := <-acc.conns:
			t.Errorf("tcp4 listener accepted %v", s.RemoteAddr())
		default:
		}
	})
}

func TestListenDialErrors(t *testing.T) {
	n := newNode(t, netstack.Config{PrivateKey: newKey(t), Addresses: []netip.Prefix{pfx("100.64.0.1/32")}})
	for _, tc := range []struct{ op, network, address, want string }{
		{"listen", "udp", ":22", "netstack: listen udp :22: network must be tcp, tcp4 or tcp6"},
		{"listen", "tcp", "22", "netstack: listen tcp 22: address 22: missing port in address"},
		{"listen", "tcp", ":ssh", `netstack: listen tcp :ssh: bad port "ssh"`},
		{"listen", "tcp", "100.64.0.9:22", "netstack: listen tcp 100.64.0.9:22: 100.64.0.9 is not one of the node's mesh addresses [100.64.0.1]"},
		{"listen", "tcp6", ":22", "netstack: listen tcp6 :22: the node has no tcp6 mesh address"},
		{"listen", "tcp", "example.com:22", `netstack: listen tcp example.com:22: "example.com" is not an IP address (host names are not resolved on the mesh)`},
		{"dial", "tcp", ":22", "netstack: dial tcp :22: need an IP address to dial"},
		{"dial", "tcp4", "[fd7a::1]:22", "netstack: dial tcp4 [fd7a::1]:22: address family does not match the network"},
		{"dial", "tcp", "100.64.0.2:0", "netstack: dial tcp 100.64.0.2:0: port 0"},
	} {
		t.Run(tc.op+" "+tc.network+" "+tc.address, func(t *testing.T) {
			var err error
			if tc.op == "listen" {
				var l net.Listener
				l, err = n.Listen(tc.network, tc.address)
				if l != nil {
					l.Close()
				}
			} else {
				var c net.Conn
				c, err = n.Dial(testCtx(t, time.Second), tc.network, tc.address)
				if c != nil {
					c.Close()
				}
			}
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	k := newKey(t)
	p1, p2 := newKey(t).Public(), newKey(t).Public()
	addrs := []netip.Prefix{pfx("100.64.0.1/32")}
	for _, tc := range []struct {
		name string
		cfg  netstack.Config
		want string
	}{
		{"no key", netstack.Config{Addresses: addrs}, "netstack: Config.PrivateKey is required"},
		{"no address", netstack.Config{PrivateKey: k}, "netstack: Config.Addresses needs at least one mesh address"},
		{"mtu", netstack.Config{PrivateKey: k, Addresses: addrs, MTU: 100}, "netstack: Config.MTU 100 is out of range (576-65535)"},
		{"ipv6 mtu", netstack.Config{PrivateKey: k, Addresses: []netip.Prefix{pfx("fd7a::1/128")}, MTU: 1000},
			"netstack: Config.Addresses[0]: IPv6 needs an MTU of at least 1280, have 1000"},
		{"duplicate prefix", netstack.Config{PrivateKey: k, Addresses: addrs, Peers: []netstack.Peer{
			{PublicKey: p1, AllowedIPs: []netip.Prefix{pfx("10.0.0.0/8")}},
			{PublicKey: p2, AllowedIPs: []netip.Prefix{pfx("10.1.2.3/8")}},
		}}, "netstack: Config.Peers: prefix 10.0.0.0/8 is given to two peers, " + p1.Short() + " ([0]) and " + p2.Short() + " ([1]); WireGuard routes a prefix to one peer"},
		{"duplicate peer", netstack.Config{PrivateKey: k, Addresses: addrs, Peers: []netstack.Peer{{PublicKey: p1}, {PublicKey: p1}}},
			"netstack: Config.Peers[0] and [1]: peer " + p1.Short() + " is listed twice"},
		{"own key", netstack.Config{PrivateKey: k, Addresses: addrs, Peers: []netstack.Peer{{PublicKey: k.Public()}}},
			"netstack: Config.Peers[0]: peer " + k.Public().Short() + " is this node's own key"},
		{"zero peer key", netstack.Config{PrivateKey: k, Addresses: addrs, Peers: []netstack.Peer{{}}},
			"netstack: Config.Peers[0].PublicKey is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := netstack.New(tc.cfg)
			if err == nil {
				n.Close()
				t.Fatal("New succeeded")
			}
			if diff := cmp.Diff(tc.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("port in use", func(t *testing.T) {
		a := newNode(t, netstack.Config{PrivateKey: k, Addresses: addrs})
		_, err := netstack.New(netstack.Config{PrivateKey: newKey(t), Addresses: addrs, BindAddress: loopback, ListenPort: a.ListenPort()})
		if err == nil || !strings.Contains(err.Error(), "bring WireGuard device up (UDP 127.0.0.1 port") {
			t.Errorf("New on a used port: %v", err)
		}
	})
}

// TestCloseNoLeak checks that a node's goroutines end with Close.
func TestCloseNoLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		p := newPairNoCleanup(t)
		defer p.a.Close()
		defer p.b.Close()
		l, err := p.a.Listen("tcp", ":22")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				echo(c)
			}
		}()
		c, err := p.b.Dial(testCtx(t, 10*time.Second), "tcp", "100.64.0.1:22")
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(c, "hello\n", 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond) // polling for goroutines to end, not waiting for an event
	}
}

// newPairNoCleanup is newPair without t.Cleanup, for the leak test.
func newPairNoCleanup(t *testing.T) *pair {
	p := &pair{ka: newKey(t), kb: newKey(t)}
	var err error
	p.a, err = netstack.New(netstack.Config{PrivateKey: p.ka, BindAddress: loopback,
		Addresses: []netip.Prefix{pfx("100.64.0.1/32")},
		Peers:     []netstack.Peer{{PublicKey: p.kb.Public(), AllowedIPs: []netip.Prefix{pfx("100.64.0.2/32")}}}})
	if err != nil {
		t.Fatal(err)
	}
	p.b, err = netstack.New(netstack.Config{PrivateKey: p.kb, BindAddress: loopback,
		Addresses: []netip.Prefix{pfx("100.64.0.2/32")},
		Peers:     []netstack.Peer{{PublicKey: p.ka.Public(), AllowedIPs: []netip.Prefix{pfx("100.64.0.1/32")}, Endpoint: endpointOf(p.a)}}})
	if err != nil {
		p.a.Close()
		t.Fatal(err)
	}
	return p
}

var _ = bytes.Equal
