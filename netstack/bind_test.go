package netstack

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/ipv4"

	"github.com/sshmesh/sshmesh/meshkey"
)

// TestBindPack checks how Send groups datagrams for UDP GSO: runs of
// equal sizes, a shorter one ending a run, at most 64 per run and 64 KiB.
func TestBindPack(t *testing.T) {
	b := newAddrBind(netip.MustParseAddr("127.0.0.1"))
	ua := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	for _, tc := range []struct {
		sizes []int
		gso   bool
		want  []string // per message: segments x size
	}{
		{[]int{100, 100, 100}, true, []string{"3x100"}},
		{[]int{100, 100, 100}, false, []string{"1x100", "1x100", "1x100"}},
		{[]int{100, 100, 50, 100}, true, []string{"3x100", "1x100"}},
		{[]int{100, 200, 200}, true, []string{"1x100", "2x200"}},
		{repeat(1500, 70), true, []string{"43x1500", "27x1500"}},
		{repeat(100, 130), true, []string{"64x100", "64x100", "2x100"}},
		{[]int{7}, true, []string{"1x7"}},
	} {
		t.Run(fmt.Sprint(tc.sizes, tc.gso), func(t *testing.T) {
			bufs := make([][]byte, len(tc.sizes))
			for i, n := range tc.sizes {
				bufs[i] = make([]byte, n)
			}
			msgs := b.msgs.Get().(*[]ipv4.Message)
			ms := b.pack(*msgs, bufs, ua, tc.gso)
			var got []string
			total := 0
			for _, m := range ms {
				got = append(got, fmt.Sprintf("%dx%d", len(m.Buffers), len(m.Buffers[0])))
				if (len(m.OOB) > 0) != (len(m.Buffers) > 1 && gsoControlSize > 0) {
					t.Errorf("message of %d datagrams has %d bytes of UDP_SEGMENT control", len(m.Buffers), len(m.OOB))
				}
				total += len(m.Buffers)
			}
			if gsoControlSize == 0 { // no UDP GSO on this OS
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
			if total != len(bufs) {
				t.Errorf("%d datagrams packed, want %d", total, len(bufs))
			}
		})
	}
}

func repeat(n, count int) []int {
	s := make([]int, count)
	for i := range s {
		s[i] = n
	}
	return s
}

// TestAllAddressesBothFamilies: a node without a BindAddress listens on
// one dual-stack socket; peers reach it over IPv4 and over IPv6 loopback
// at once, and each keeps its identity.
func TestAllAddressesBothFamilies(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("our own all-addresses bind is Linux's; elsewhere wireguard-go's serves")
	}
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no IPv6 loopback, which CI machines have: %v", err)
		}
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		c.Close()
	}
	k0, k4, k6 := mustKey(t), mustKey(t), mustKey(t)
	srv, err := newNode(Config{
		PrivateKey: k0,
		Addresses:  []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
		Peers: []Peer{
			{PublicKey: k4.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.4/32")}},
			{PublicKey: k6.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.6/32")}},
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if b := srv.dev.Bind().(*addrBind); !b.dual {
		t.Fatalf("the all-addresses socket is not dual-stack")
	}
	l, err := srv.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				k, _ := srv.PeerForAddr(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
				fmt.Fprintf(c, "%s\n", k)
			}()
		}
	}()
	for _, c := range []struct {
		key  meshkey.Private
		addr string
		via  netip.Addr
	}{{k4, "100.64.0.4/32", netip.MustParseAddr("127.0.0.1")}, {k6, "100.64.0.6/32", netip.IPv6Loopback()}} {
		cl, err := newNode(Config{
			PrivateKey: c.key,
			Addresses:  []netip.Prefix{netip.MustParsePrefix(c.addr)},
			Peers: []Peer{{PublicKey: k0.Public(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
				Endpoint: netip.AddrPortFrom(c.via, srv.ListenPort())}},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		conn, err := cl.Dial(ctx, "tcp", "100.64.0.1:7")
		cancel()
		if err != nil {
			t.Fatalf("over %v: %v", c.via, err)
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if want := c.key.Public().String() + "\n"; err != nil || line != want {
			t.Errorf("over %v the server saw peer %q (%v); want %q", c.via, line, err, want)
		}
	}
}
