package main

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestRelay: two clients behind the relay each get their own upstream
// address (NAT-like), the server's replies go back to the client that
// sent, every datagram is delayed in each direction, and order holds.
func TestRelay(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	seen := make(chan netip.AddrPort, 100)
	go func() { // echo, noting each sender
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			seen <- from
			srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	const delay = 20 * time.Millisecond
	r, err := newRelay(netip.MustParseAddrPort("127.0.0.1:0"), srv.LocalAddr().(*net.UDPAddr).AddrPort(), delay, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go r.serve()
	ups := map[netip.AddrPort]bool{}
	for c := range 2 {
		cl, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		start := time.Now()
		for i := range 20 {
			fmt.Fprintf(cl, "%d-%d", c, i)
		}
		cl.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		for i := range 20 {
			n, err := cl.Read(buf)
			if err != nil {
				t.Fatalf("client %d, datagram %d: %v", c, i, err)
			}
			if got, want := string(buf[:n]), fmt.Sprintf("%d-%d", c, i); got != want {
				t.Fatalf("client %d got %q, want %q (order or mapping broken)", c, got, want)
			}
			if i == 0 {
				if rtt := time.Since(start); rtt < 2*delay {
					t.Errorf("round trip %v, want at least %v", rtt, 2*delay)
				}
			}
		}
		for range 20 {
			ups[<-seen] = true
		}
	}
	if len(ups) != 2 {
		t.Errorf("the server saw %d upstream addresses for 2 clients, want 2: %v", len(ups), ups)
	}
}

// TestRelayLoss drops about the share asked for.
func TestRelayLoss(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	r, err := newRelay(netip.MustParseAddrPort("127.0.0.1:0"), srv.LocalAddr().(*net.UDPAddr).AddrPort(), 0, 10, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go r.serve()
	cl, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 2000
	count := make(chan int)
	go func() {
		got := 0
		buf := make([]byte, 64)
		for {
			srv.SetReadDeadline(time.Now().Add(time.Second))
			if _, _, err := srv.ReadFromUDPAddrPort(buf); err != nil {
				count <- got
				return
			}
			got++
		}
	}()
	for i := range n {
		fmt.Fprintf(cl, "%d", i)
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // stay within the socket buffers
		}
	}
	got := <-count
	if lost := n - got; lost < n*5/100 || lost > n*15/100 {
		t.Errorf("%d of %d lost at 10%%", lost, n)
	}
}
