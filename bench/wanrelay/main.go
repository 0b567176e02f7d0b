// Command wanrelay is the WAN in front of a WireGuard endpoint for
// bench/run --wan: a userspace UDP relay that delays every datagram by a
// fixed one-way delay and drops a share of them at random, in each
// direction, keeping the order of the rest. (The bench machine's kernel
// has no netem.)
//
// It is NAT-like: each client address gets its own upstream socket, so the
// server's WireGuard sees one address per client and its own roaming
// decides where replies go. (A relay that sent replies to whoever spoke
// last stalls when a previous `sshmesh nc` with the same key is still
// exiting.)
//
//	wanrelay -listen 10.232.0.2:51900 -upstream 10.232.0.1:51820 -delay 20ms -loss 0.5
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "", "`addr:port` the clients send to (required)")
	upstream := flag.String("upstream", "", "`addr:port` of the server's WireGuard endpoint (required)")
	delay := flag.Duration("delay", 0, "one-way delay added in each direction")
	loss := flag.Float64("loss", 0, "share of datagrams dropped in each direction, in `percent`")
	idle := flag.Duration("idle", 3*time.Minute, "a client address unheard for this long loses its upstream socket")
	seed := flag.Uint64("seed", 1, "seed of the loss decisions")
	flag.Parse()
	if *listen == "" || *upstream == "" {
		flag.Usage()
		os.Exit(2)
	}
	la, err := netip.ParseAddrPort(*listen)
	if err != nil {
		log.Fatalf("wanrelay: -listen: %v", err)
	}
	ua, err := netip.ParseAddrPort(*upstream)
	if err != nil {
		log.Fatalf("wanrelay: -upstream: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := newRelay(la, ua, *delay, *loss, *seed)
	if err != nil {
		log.Fatalf("wanrelay: %v", err)
	}
	r.idle = *idle
	go func() { <-ctx.Done(); r.Close() }()
	r.serve()
	up, down, dropped := r.counts()
	fmt.Fprintf(os.Stderr, "wanrelay: %d datagrams up, %d down, %d dropped\n", up, down, dropped)
}

// relay forwards between clients on ln and the upstream address.
type relay struct {
	ln       *net.UDPConn
	upstream netip.AddrPort
	delay    time.Duration
	lossPct  float64
	idle     time.Duration

	mu                sync.Mutex
	rng               *rand.Rand
	flows             map[netip.AddrPort]*flow
	up, down, dropped int
	closed            bool
}

// flow is one client address: its own upstream socket and a delay line
// in each direction.
type flow struct {
	client   netip.AddrPort
	conn     *net.UDPConn // connected to the upstream address
	toServer chan datagram
	toClient chan datagram
	done     chan struct{} // closed when conn is
	heard    time.Time     // guarded by relay.mu
}

type datagram struct {
	due time.Time
	b   []byte
}

func newRelay(listen, upstream netip.AddrPort, delay time.Duration, lossPct float64, seed uint64) (*relay, error) {
	ln, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(listen))
	if err != nil {
		return nil, err
	}
	ln.SetReadBuffer(8 << 20)
	ln.SetWriteBuffer(8 << 20)
	return &relay{ln: ln, upstream: upstream, delay: delay, lossPct: lossPct, idle: 3 * time.Minute,
		rng: rand.New(rand.NewPCG(seed, 30)), flows: make(map[netip.AddrPort]*flow)}, nil
}

func (r *relay) addr() netip.AddrPort { return r.ln.LocalAddr().(*net.UDPAddr).AddrPort() }

func (r *relay) counts() (up, down, dropped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.up, r.down, r.dropped
}

// Close stops the relay and all its flows.
func (r *relay) Close() {
	r.mu.Lock()
	r.closed = true
	for _, f := range r.flows {
		f.conn.Close()
	}
	r.mu.Unlock()
	r.ln.Close()
}

// lose decides at random whether a datagram is dropped, and counts it.
func (r *relay) lose(up bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lossPct > 0 && r.rng.Float64()*100 < r.lossPct {
		r.dropped++
		return true
	}
	if up {
		r.up++
	} else {
		r.down++
	}
	return false
}

// serve reads the clients' datagrams until the relay is closed.
func (r *relay) serve() {
	buf := make([]byte, 65535)
	go r.expire()
	for {
		n, from, err := r.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		now := time.Now()
		f := r.flow(from, now)
		if f == nil || r.lose(true) {
			continue
		}
		select {
		case f.toServer <- datagram{now.Add(r.delay), append([]byte(nil), buf[:n]...)}:
		case <-f.done:
		}
	}
}

// flow returns from's flow, starting it when it is new.
func (r *relay) flow(from netip.AddrPort, now time.Time) *flow {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	if f := r.flows[from]; f != nil {
		f.heard = now
		return f
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(r.upstream))
	if err != nil {
		log.Printf("wanrelay: upstream socket for %v: %v", from, err)
		return nil
	}
	conn.SetReadBuffer(8 << 20)
	conn.SetWriteBuffer(8 << 20)
	f := &flow{client: from, conn: conn, heard: now,
		toServer: make(chan datagram, 1<<16), toClient: make(chan datagram, 1<<16), done: make(chan struct{})}
	r.flows[from] = f
	go delayLine(f.toServer, f.done, func(b []byte) { conn.Write(b) })
	go delayLine(f.toClient, f.done, func(b []byte) { r.ln.WriteToUDPAddrPort(b, from) })
	go func() { // the server's replies to this client
		defer close(f.done)
		buf := make([]byte, 65535)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if r.lose(false) {
				continue
			}
			select {
			case f.toClient <- datagram{time.Now().Add(r.delay), append([]byte(nil), buf[:n]...)}:
			case <-f.done:
			}
		}
	}()
	return f
}

// expire closes the flows of clients unheard for r.idle.
func (r *relay) expire() {
	for {
		time.Sleep(r.idle / 4)
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return
		}
		for a, f := range r.flows {
			if time.Since(f.heard) > r.idle {
				delete(r.flows, a)
				f.conn.Close()
			}
		}
		r.mu.Unlock()
	}
}

// delayLine sends each datagram when it is due, in order, until done.
func delayLine(q <-chan datagram, done <-chan struct{}, send func([]byte)) {
	for {
		select {
		case d := <-q:
			if w := time.Until(d.due); w > 0 {
				time.Sleep(w)
			}
			send(d.b)
		case <-done:
			return
		}
	}
}
