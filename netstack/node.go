package netstack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

const (
	defaultMTU = device.DefaultMTU // 1420
	minMTU     = 576
	maxMTU     = 65535
	// minMTU6 is the smallest MTU IPv6 allows.
	minMTU6 = 1280
)

// ErrClosed is returned by the methods of a closed [Node].
var ErrClosed = errors.New("netstack: node closed")

// Node is a WireGuard node inside the process: a WireGuard device whose
// tunnel ends in an in-process TCP/IP stack. Its methods are safe for
// concurrent use.
type Node struct {
	priv   meshkey.Private
	pub    meshkey.Public
	addrs  []netip.Addr
	log    *slog.Logger
	dev    *device.Device
	tun    *linkDevice
	tnet   *meshStack
	port   uint16
	closed chan struct{}

	table atomic.Pointer[table] // address → peer; read without mu, also by the link per packet

	resp     *responder   // opens handshake initiations (dormant.go)
	wakes    budget       // of initiations opened per second
	dormantN atomic.Int64 // len(dormant), read without mu

	mu        sync.Mutex                    // serializes SetPeers, Listen, Close and the waking of dormant peers
	peers     []Peer                        // the current peer set, validated
	states    map[meshkey.Public]*peerState // one per peer in peers; the tables point at them
	dormant   map[meshkey.Public]Peer       // the peers not on the device (yet); see dormant.go
	listeners map[net.Listener]struct{}
	isClosed  bool
}

// New creates a node, configures its WireGuard device and brings it up. The
// node needs no privileges and no TUN device; it owns one UDP socket.
func New(cfg Config) (*Node, error) { return newNode(cfg, nil) }

// newNode is New; wrapBind, when not nil, wraps the node's UDP bind (tests
// inject loss and reordering with it).
func newNode(cfg Config, wrapBind func(conn.Bind) conn.Bind) (*Node, error) {
	if cfg.PrivateKey.IsZero() {
		return nil, errors.New("netstack: Config.PrivateKey is required")
	}
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("netstack: Config.Addresses needs at least one mesh address")
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = defaultMTU
	}
	if mtu < minMTU || mtu > maxMTU {
		return nil, fmt.Errorf("netstack: Config.MTU %d is out of range (%d-%d)", mtu, minMTU, maxMTU)
	}
	var addrs []netip.Addr
	for i, p := range cfg.Addresses {
		a := p.Addr().Unmap()
		if !p.IsValid() || a.Zone() != "" || a.IsUnspecified() {
			return nil, fmt.Errorf("netstack: Config.Addresses[%d]: %v is not a usable address", i, p)
		}
		if a.Is6() && mtu < minMTU6 {
			return nil, fmt.Errorf("netstack: Config.Addresses[%d]: IPv6 needs an MTU of at least %d, have %d", i, minMTU6, mtu)
		}
		if slices.Contains(addrs, a) {
			return nil, fmt.Errorf("netstack: Config.Addresses[%d]: %v given twice", i, a)
		}
		addrs = append(addrs, a)
	}
	resp, err := newResponder(cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("netstack: Config.PrivateKey: %w", err)
	}
	n := &Node{
		resp:      resp,
		priv:      cfg.PrivateKey,
		pub:       cfg.PrivateKey.Public(),
		addrs:     addrs,
		log:       cfg.Logger,
		closed:    make(chan struct{}),
		wakes:     budget{n: wakeChecksPerSecond},
		listeners: make(map[net.Listener]struct{}),
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	peers, err := n.validatePeers("Config.Peers", cfg.Peers)
	if err != nil {
		return nil, err
	}

	ba := cfg.BindAddress.Unmap()
	if ba.Zone() != "" {
		return nil, fmt.Errorf("netstack: Config.BindAddress %v: zones are not supported", cfg.BindAddress)
	}
	var bind conn.Bind
	if ba.IsValid() {
		bind = newAddrBind(ba)
	} else {
		bind = allAddressesBind()
	}
	if wrapBind != nil {
		bind = wrapBind(bind)
	}
	bind = &wakingBind{Bind: bind, wake: n.wake}

	flights := newLedger(flightLimit, flightStall)
	bind = &meteredBind{Bind: bind, g: flights}
	n.tun, n.tnet, err = newStack(addrs, stackOptions{mtu: mtu, gro: !cfg.DisableGRO, ledger: flights, onDevice: n.onDevice})
	if err != nil {
		return nil, fmt.Errorf("netstack: %w", err)
	}
	n.dev = device.NewDevice(n.tun, bind, n.deviceLogger())

	// Configure everything, then come up.
	var uapi strings.Builder
	fmt.Fprintf(&uapi, "private_key=%s\nlisten_port=%d\nreplace_peers=true\n", n.priv.Hex(), cfg.ListenPort)
	dormant := make(map[meshkey.Public]Peer)
	for _, p := range peers {
		if startsDormant(p) {
			dormant[p.PublicKey] = p
			continue
		}
		writePeer(&uapi, p, false)
	}
	n.setDormant(dormant)
	nDormant := len(dormant) // once the device is up, wake changes dormant
	// Set before the device comes up: from then on, wake and the link
	// read them.
	n.peers = peers
	n.states = make(map[meshkey.Public]*peerState, len(peers))
	for _, p := range peers {
		ps := &peerState{key: p.PublicKey}
		_, isDormant := dormant[p.PublicKey]
		ps.dormant.Store(isDormant)
		n.states[p.PublicKey] = ps
	}
	n.table.Store(newTable(peers, n.states))
	if err := n.dev.IpcSet(uapi.String()); err != nil {
		n.dev.Close()
		return nil, fmt.Errorf("netstack: configure WireGuard device: %w", redactUAPIError(err, n.secrets(peers)...))
	}
	if err := n.dev.Up(); err != nil {
		n.dev.Close()
		return nil, fmt.Errorf("netstack: bring WireGuard device up (UDP %v port %d): %w", bindName(cfg.BindAddress), cfg.ListenPort, err)
	}
	port, err := n.readListenPort()
	if err != nil {
		n.dev.Close()
		return nil, fmt.Errorf("netstack: read the UDP port: %w", err)
	}
	n.port = port
	n.log.Info("netstack: node up", "peer", n.pub.String(), "addr", addrs, "port", port, "peers", len(peers), "dormant", nDormant)
	return n, nil
}

func bindName(a netip.Addr) string {
	if !a.IsValid() {
		return "all addresses"
	}
	return a.String()
}

// redactUAPIError returns the device's error, or only its code when its
// text holds any of the secret keys (hex or base64) the UAPI was given.
func redactUAPIError(err error, secrets ...meshkey.Private) error {
	msg := err.Error()
	for _, k := range secrets {
		if !k.IsZero() && (strings.Contains(msg, k.Hex()) || strings.Contains(msg, k.Base64())) {
			var ipcErr *device.IPCError
			if errors.As(err, &ipcErr) {
				return fmt.Errorf("UAPI error code %d (details withheld: they hold a key)", ipcErr.ErrorCode())
			}
			return errors.New("UAPI error (details withheld: they hold a key)")
		}
	}
	return err
}

// secrets returns the private key and the peers' preshared keys.
func (n *Node) secrets(peers []Peer) []meshkey.Private {
	s := []meshkey.Private{n.priv}
	for _, p := range peers {
		s = append(s, p.PresharedKey)
	}
	return s
}

func (n *Node) deviceLogger() *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			n.log.Debug("wireguard: " + fmt.Sprintf(format, args...))
		},
		Errorf: func(format string, args ...any) {
			n.log.Error("wireguard: " + fmt.Sprintf(format, args...))
		},
	}
}

// writePeer writes one peer's UAPI lines. update says the peer exists on the
// device already: its allowed IPs are replaced, and its other settings set.
func writePeer(w io.Writer, p Peer, update bool) {
	fmt.Fprintf(w, "public_key=%s\n", p.PublicKey.Hex())
	if update {
		io.WriteString(w, "update_only=true\n")
	}
	fmt.Fprintf(w, "preshared_key=%s\n", p.PresharedKey.Hex())
	if p.Endpoint.IsValid() {
		fmt.Fprintf(w, "endpoint=%s\n", p.Endpoint)
	}
	fmt.Fprintf(w, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepalive/time.Second))
	io.WriteString(w, "replace_allowed_ips=true\n")
	for _, a := range p.AllowedIPs {
		fmt.Fprintf(w, "allowed_ip=%s\n", a.Masked())
	}
}

// validatePeers checks a peer list and returns a private copy of it with
// masked prefixes. what names the list in errors.
func (n *Node) validatePeers(what string, peers []Peer) ([]Peer, error) {
	out := make([]Peer, len(peers))
	keys := make(map[meshkey.Public]int)
	owner := make(map[netip.Prefix]int)
	for i, p := range peers {
		if p.PublicKey.IsZero() {
			return nil, fmt.Errorf("netstack: %s[%d].PublicKey is required", what, i)
		}
		if p.PublicKey == n.pub {
			return nil, fmt.Errorf("netstack: %s[%d]: peer %s is this node's own key", what, i, p.PublicKey.Short())
		}
		if j, dup := keys[p.PublicKey]; dup {
			return nil, fmt.Errorf("netstack: %s[%d] and [%d]: peer %s is listed twice", what, j, i, p.PublicKey.Short())
		}
		keys[p.PublicKey] = i
		if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535*time.Second {
			return nil, fmt.Errorf("netstack: %s[%d].PersistentKeepalive %v is out of range (0-65535s)", what, i, p.PersistentKeepalive)
		}
		if p.Endpoint.IsValid() && p.Endpoint.Port() == 0 {
			return nil, fmt.Errorf("netstack: %s[%d].Endpoint %v has port 0", what, i, p.Endpoint)
		}
		q := p
		q.Endpoint = netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port())
		q.AllowedIPs = make([]netip.Prefix, 0, len(p.AllowedIPs))
		for _, a := range p.AllowedIPs {
			if !a.IsValid() || a.Addr().Zone() != "" {
				return nil, fmt.Errorf("netstack: %s[%d].AllowedIPs: %v is not a prefix", what, i, a)
			}
			m := a.Masked()
			if j, dup := owner[m]; dup {
				if j == i {
					continue // the same peer twice: harmless
				}
				return nil, fmt.Errorf("netstack: %s: prefix %v is given to two peers, %s ([%d]) and %s ([%d]); WireGuard routes a prefix to one peer",
					what, m, peers[j].PublicKey.Short(), j, p.PublicKey.Short(), i)
			}
			owner[m] = i
			q.AllowedIPs = append(q.AllowedIPs, m)
		}
		out[i] = q
	}
	return out, nil
}

// PublicKey returns the node's public key, its identity on the mesh.
func (n *Node) PublicKey() meshkey.Public { return n.pub }

// Addresses returns the node's mesh addresses.
func (n *Node) Addresses() []netip.Addr { return slices.Clone(n.addrs) }

// ListenPort returns the UDP port the node's WireGuard socket listens on
// (the chosen one when Config.ListenPort was 0).
func (n *Node) ListenPort() uint16 { return n.port }

// Peers returns a copy of the current peer set, with allowed IPs masked.
func (n *Node) Peers() []Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Peer, len(n.peers))
	for i, p := range n.peers {
		p.AllowedIPs = slices.Clone(p.AllowedIPs)
		out[i] = p
	}
	return out
}

// PeerForAddr returns the peer whose allowed IPs hold a, with WireGuard's
// meaning: the longest matching prefix wins. WireGuard delivers a packet
// only when its source lies in the sending peer's allowed IPs, and the
// node's stack takes a packet only when its source's owner is the peer the
// device holds for it (see [Node.SetPeers] and the dormant peers), so the
// source address of a mesh conn names the peer whose key decrypted it.
// While SetPeers changes the owner of a, it names no peer.
func (n *Node) PeerForAddr(a netip.Addr) (meshkey.Public, bool) {
	return n.table.Load().peer(a)
}

// onDevice reports whether a packet with address a, to or from the mesh,
// belongs to the peer the WireGuard device holds for a. The device itself
// matches a against the allowed IPs of the peers it holds, which lack the
// dormant peers' prefixes: a wider prefix of another peer (a hub's /24, a
// 0.0.0.0/0) would take a dormant peer's address. So the stack takes a
// packet only when a's owner in the whole peer set is on the device (then
// the device matched the same peer) and the link sends one only then, as a
// device holding every peer would. Addresses in flux during SetPeers and
// addresses no peer owns fail.
func (n *Node) onDevice(a netip.Addr) bool {
	_, ok := n.table.Load().sender(a)
	return ok
}

// SetPeers replaces the peer set live: it adds the new peers, removes the
// missing ones and updates the changed ones. Unchanged peers are not touched
// and keep their sessions and conns. A prefix that moves to another peer
// moves its identity with it; while the change is applied, addresses whose
// owner changes resolve to no peer, and the stack drops their packets.
// Within peers, a prefix given to two peers is an error.
func (n *Node) SetPeers(peers []Peer) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isClosed {
		return ErrClosed
	}
	next, err := n.validatePeers("SetPeers", peers)
	if err != nil {
		return err
	}
	old := make(map[meshkey.Public]Peer, len(n.peers))
	for _, p := range n.peers {
		old[p.PublicKey] = p
	}
	var uapi strings.Builder
	// Without replace_peers, the peers not named here stay as they are.
	keep := make(map[meshkey.Public]bool, len(next))
	dormant := make(map[meshkey.Public]Peer)
	states := make(map[meshkey.Public]*peerState, len(next))
	for _, p := range next {
		keep[p.PublicKey] = true
		prev, existed := old[p.PublicKey]
		_, wasDormant := n.dormant[p.PublicKey]
		// A peer keeps its state; a new one starts dormant, off the
		// device, until the change is applied (its prefixes are in flux
		// until then anyway).
		ps := n.states[p.PublicKey]
		if ps == nil {
			ps = &peerState{key: p.PublicKey}
			ps.dormant.Store(true)
		}
		states[p.PublicKey] = ps
		switch {
		case existed && !wasDormant: // on the device: it stays there
			if !samePeer(prev, p) {
				writePeer(&uapi, p, true)
			}
		case startsDormant(p):
			dormant[p.PublicKey] = p
		default: // new, or dormant until now, with an endpoint
			writePeer(&uapi, p, false)
		}
	}
	var removed []meshkey.Public
	for _, p := range n.peers {
		if !keep[p.PublicKey] {
			if _, wasDormant := n.dormant[p.PublicKey]; !wasDormant {
				fmt.Fprintf(&uapi, "public_key=%s\nremove=true\n", p.PublicKey.Hex())
			}
			removed = append(removed, p.PublicKey)
		}
	}
	oldTable, nextTable := n.table.Load(), newTable(next, states)
	n.table.Store(transition(oldTable, nextTable))
	if err := n.dev.IpcSet(uapi.String()); err != nil {
		// The device may be half-changed; our table stays fail-closed for
		// every prefix in flux.
		return fmt.Errorf("netstack: SetPeers: apply to WireGuard device: %w", redactUAPIError(err, n.secrets(next)...))
	}
	// The device holds every peer of next but the dormant ones now.
	for k, ps := range states {
		if _, isDormant := dormant[k]; !isDormant {
			ps.dormant.Store(false)
		}
	}
	n.table.Store(nextTable)
	n.peers = next
	n.states = states
	n.setDormant(dormant)
	for _, k := range removed {
		n.log.Info("netstack: peer removed", "peer", k.String())
	}
	return nil
}

// isPeer reports whether peer is in the node's peer set.
func (n *Node) isPeer(peer meshkey.Public) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.ContainsFunc(n.peers, func(p Peer) bool { return p.PublicKey == peer })
}

// startsDormant reports whether a peer that is not on the device yet stays
// off it until it writes: the node has no endpoint to reach it at.
func startsDormant(p Peer) bool { return !p.Endpoint.IsValid() }

// setDormant makes m the dormant peers; mu is held, or the device is not
// up yet.
func (n *Node) setDormant(m map[meshkey.Public]Peer) {
	n.dormant = m
	n.dormantN.Store(int64(len(m)))
}

// wake adds a dormant peer to the device when msg, a received handshake
// initiation, is its (see dormant.go). It runs on the device's receive
// path, before the device reads msg.
func (n *Node) wake(msg []byte) {
	if n.dormantN.Load() == 0 || !n.resp.addressed(msg) || !n.wakes.take(time.Now()) {
		return
	}
	in, ok := n.resp.open(msg)
	if !ok {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	p, dormant := n.dormant[in.static]
	// The device closes only after isClosed is set under mu, so while mu
	// is held here, IpcSet cannot wait for a closing device.
	if !dormant || n.isClosed || !n.resp.authentic(in) {
		return
	}
	var uapi strings.Builder
	writePeer(&uapi, p, false)
	if err := n.dev.IpcSet(uapi.String()); err != nil {
		n.log.Error("netstack: add a dormant peer to the WireGuard device", "peer", p.PublicKey.String(), "err", redactUAPIError(err, n.secrets([]Peer{p})...))
		return
	}
	n.states[in.static].dormant.Store(false) // on the device: its packets are its own now
	delete(n.dormant, in.static)
	n.setDormant(n.dormant)
	n.log.Debug("netstack: dormant peer woke: on the device from its first handshake", "peer", p.PublicKey.String())
}

func samePeer(a, b Peer) bool {
	return a.PublicKey == b.PublicKey && a.PresharedKey == b.PresharedKey &&
		a.Endpoint == b.Endpoint && a.PersistentKeepalive/time.Second == b.PersistentKeepalive/time.Second &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs)
}

// StartHandshake sends peer a WireGuard handshake initiation now, unless a
// handshake with it has completed already (at any time since the peer was
// added) or the node does not know its endpoint; it does not wait for the
// answer (see [Node.WaitHandshake]). Without it, the first packet to the
// peer starts the handshake: a tool that is about to dial saves time by
// starting it while it sets up the dial. WireGuard sends at most one
// initiation per peer in 5 s, so calling it again soon does nothing.
func (n *Node) StartHandshake(peer meshkey.Public) error {
	select {
	case <-n.closed:
		return ErrClosed
	default:
	}
	wp := n.dev.LookupPeer(device.NoisePublicKey(peer))
	if wp == nil {
		if n.isPeer(peer) {
			return nil // dormant: it has no endpoint, it writes first
		}
		return fmt.Errorf("netstack: StartHandshake: %s is not a peer of this node", peer.Short())
	}
	done, hasEndpoint, err := n.handshakeDone(peer)
	if err != nil {
		return fmt.Errorf("netstack: StartHandshake %s: %w", peer.Short(), err)
	}
	if !done && hasEndpoint {
		if err := wp.SendHandshakeInitiation(false); err != nil {
			return fmt.Errorf("netstack: StartHandshake %s: %w", peer.Short(), err)
		}
	}
	return nil
}

// WaitHandshake returns once a WireGuard handshake with peer has completed
// (at any time since the peer was added), or when ctx is done. When the
// node knows the peer's endpoint and no handshake has happened yet, it
// starts one.
func (n *Node) WaitHandshake(ctx context.Context, peer meshkey.Public) error {
	if !n.isPeer(peer) {
		return fmt.Errorf("netstack: WaitHandshake: %s is not a peer of this node", peer.Short())
	}
	initiated := false
	delay := time.Millisecond
	for {
		done, hasEndpoint, err := n.handshakeDone(peer)
		if err != nil {
			return fmt.Errorf("netstack: WaitHandshake %s: %w", peer.Short(), err)
		}
		if done {
			return nil
		}
		if wp := n.dev.LookupPeer(device.NoisePublicKey(peer)); wp != nil && !initiated && hasEndpoint {
			_ = wp.SendHandshakeInitiation(false)
			initiated = true
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("netstack: WaitHandshake %s: %w", peer.Short(), ctx.Err())
		case <-n.closed:
			t.Stop()
			return ErrClosed
		case <-t.C:
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// deviceLines calls fn with each line of the device's UAPI state until fn
// returns false. The dump holds the private key: callers look only at the
// lines they need, and the buffer is wiped.
func (n *Node) deviceLines(fn func(line string) bool) error {
	var buf bytes.Buffer
	defer func() { clear(buf.Bytes()[:buf.Cap()]) }()
	if err := n.dev.IpcGetOperation(&buf); err != nil {
		return errors.New("read WireGuard device state")
	}
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	for sc.Scan() && fn(sc.Text()) {
	}
	return nil
}

// handshakeDone reads the device state for peer.
func (n *Node) handshakeDone(peer meshkey.Public) (done, hasEndpoint bool, err error) {
	want := "public_key=" + peer.Hex()
	in := false
	err = n.deviceLines(func(line string) bool {
		if strings.HasPrefix(line, "public_key=") {
			in = line == want
			return true
		}
		if !in {
			return true
		}
		switch {
		case strings.HasPrefix(line, "endpoint="):
			hasEndpoint = true
		case strings.HasPrefix(line, "last_handshake_time_sec="), strings.HasPrefix(line, "last_handshake_time_nsec="):
			_, v, _ := strings.Cut(line, "=")
			if x, _ := strconv.ParseInt(v, 10, 64); x != 0 {
				done = true
			}
		}
		return true
	})
	return done, hasEndpoint, err
}

func (n *Node) readListenPort() (uint16, error) {
	var port string
	if err := n.deviceLines(func(line string) bool {
		v, ok := strings.CutPrefix(line, "listen_port=")
		if ok {
			port = v
		}
		return !ok
	}); err != nil {
		return 0, err
	}
	if port == "" {
		return 0, errors.New("device reported no listen_port")
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad listen_port %q", port)
	}
	return uint16(p), nil
}

// Listen listens for TCP conns on the mesh. network is "tcp", "tcp4" or
// "tcp6"; address is "host:port" where host is one of the node's mesh
// addresses, or empty (":22") for all of them. Its conns are *[Conn]s
// that know their peer; a conn whose source address no peer owns is
// closed at accept (and logged). The listener has a NodeKey method (the
// node's public key), so a server can check that its policy names it.
func (n *Node) Listen(network, address string) (net.Listener, error) {
	ap, err := n.parseAddr("listen", network, address, true)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.isClosed {
		return nil, ErrClosed
	}
	l, err := n.tnet.ListenTCPAddrPort(ap)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen %s %s: %w", network, address, err)
	}
	var inner net.Listener = l
	if !ap.Addr().IsValid() && network != "tcp" {
		inner = &familyListener{Listener: l, v4: network == "tcp4", log: n.log}
	}
	tl := &trackedListener{Listener: &peerListener{Listener: inner, n: n}, n: n}
	n.listeners[tl] = struct{}{}
	return tl, nil
}

// trackedListener is forgotten by its node when closed.
type trackedListener struct {
	net.Listener
	n    *Node
	once sync.Once
}

func (l *trackedListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() {
		l.n.mu.Lock()
		delete(l.n.listeners, l)
		l.n.mu.Unlock()
	})
	return err
}

// familyListener passes on only the conns of one address family: gVisor's
// wildcard listener takes both.
type familyListener struct {
	net.Listener
	v4  bool
	log *slog.Logger
}

func (l *familyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ta, ok := c.LocalAddr().(*net.TCPAddr); ok && (ta.IP.To4() != nil) == l.v4 {
			return c, nil
		}
		l.log.Debug("netstack: conn of the other address family refused", "addr", c.RemoteAddr().String())
		c.Close()
	}
}

// Dial opens a TCP conn over the mesh. network is "tcp", "tcp4" or "tcp6";
// address is "ip:port" (a mesh IP; host names are not resolved). The conn
// is a *[Conn] of the peer that owns the address.
func (n *Node) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := n.parseAddr("dial", network, address, false)
	if err != nil {
		return nil, err
	}
	select {
	case <-n.closed:
		return nil, ErrClosed
	default:
	}
	c, err := n.dialConn(ctx, ap)
	if err != nil {
		return nil, fmt.Errorf("netstack: dial %s %s: %w", network, address, err)
	}
	return c, nil
}

// parseAddr checks network and parses address for Listen or Dial.
func (n *Node) parseAddr(op, network, address string, wildcardOK bool) (netip.AddrPort, error) {
	fail := func(format string, args ...any) (netip.AddrPort, error) {
		return netip.AddrPort{}, fmt.Errorf("netstack: %s %s %s: %s", op, network, address, fmt.Sprintf(format, args...))
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fail("network must be tcp, tcp4 or tcp6")
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return fail("%v", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return fail("bad port %q", portStr)
	}
	var a netip.Addr
	if host != "" {
		a, err = netip.ParseAddr(host)
		if err != nil {
			return fail("%q is not an IP address (host names are not resolved on the mesh)", host)
		}
		a = a.Unmap()
		if (network == "tcp4" && !a.Is4()) || (network == "tcp6" && !a.Is6()) {
			return fail("address family does not match the network")
		}
	}
	if !a.IsValid() || a.IsUnspecified() {
		if !wildcardOK {
			return fail("need an IP address to dial")
		}
		// gVisor's wildcard is the empty address, for both families;
		// Listen filters by family for tcp4 and tcp6.
		a = netip.Addr{}
		if network != "tcp" && !n.hasFamily(network == "tcp4") {
			return fail("the node has no %s mesh address", network)
		}
	} else if !wildcardOK {
		if port == 0 {
			return fail("port 0")
		}
	} else if !slices.Contains(n.addrs, a) {
		return fail("%v is not one of the node's mesh addresses %v", a, n.addrs)
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
}

func (n *Node) hasFamily(v4 bool) bool {
	for _, a := range n.addrs {
		if a.Is4() == v4 {
			return true
		}
	}
	return false
}

// Close closes the node's listeners, its WireGuard device, its UDP socket
// and its stack. Conns on the mesh break.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.isClosed {
		n.mu.Unlock()
		return nil
	}
	n.isClosed = true
	close(n.closed)
	ls := make([]net.Listener, 0, len(n.listeners))
	for l := range n.listeners {
		ls = append(ls, l)
	}
	n.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	n.dev.Close() // closes the bind and, through the TUN, the stack
	n.log.Info("netstack: node closed", "peer", n.pub.String())
	return nil
}
