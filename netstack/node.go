package netstack

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

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
	// settled is the table of peers when no SetPeers is under way or
	// failed half-way (then table is another); written under mu.
	settled *table
	// deviceUnknown is set when a SetPeers failed part-way and the device
	// could not be put back as it was: the next SetPeers replaces the
	// device's whole peer set rather than changing it.
	deviceUnknown bool

	resp     *responder   // opens handshake initiations (dormant.go)
	wakes    budget       // of initiations opened per second
	dormantN atomic.Int64 // len(dormant), read without mu

	mu    sync.Mutex // serializes SetPeers, Listen, Close and the waking of dormant peers
	peers []peerRec  // the current peer set, validated
	// stateAt holds the state of each peer in peers, by index; the tables
	// point at them. byKey finds them by the peer's key.
	stateAt []*peerState
	byKey   keyIndex
	// sections are the digests of the wg-quick file's [Peer] sections
	// that peers came from, by index in peers; nil when they came from
	// elsewhere (see ParseUpdate).
	sections []sectionSum
	gen      uint64 // counts the changes of peers
	// A peer is dormant, off the device until it writes (see dormant.go),
	// when its state says so while mu is held outside SetPeers.
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
	n.settled = new(table)
	// Peers that are still the ones ParseConfig read were checked for a
	// key or a prefix twice; the node takes the digests of their sections.
	parsed := cfg.file != nil && len(cfg.file.sums) == len(cfg.Peers) && peersPrint(cfg.Peers) == cfg.file.print
	d, err := n.diffPeers("Config.Peers", newPeerSlice(cfg.Peers), parsed) // against no peers: every one checked
	if err != nil {
		return nil, err
	}
	peers := d.next
	if parsed {
		n.sections = cfg.file.sums
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
	// Set before the device comes up: from then on, wake and the link
	// read them.
	n.peers = peers
	n.stateAt = make([]*peerState, len(peers))
	states := make([]peerState, len(peers)) // one allocation, not one per peer
	nDormant := 0                           // once the device is up, wake changes the count
	for i, r := range peers {
		p := r.peer(cfg.Peers[i].PublicKey)
		ps := &states[i]
		ps.key, ps.idx = p.PublicKey, int32(i)
		if startsDormant(p) {
			ps.dormant.Store(true)
			nDormant++
		} else {
			writePeer(&uapi, p, false)
		}
		n.stateAt[i] = ps
	}
	n.byKey = newKeyIndex(n.stateAt)
	n.dormantN.Store(int64(nDormant))
	n.settled = newTable(peers, n.stateAt)
	n.table.Store(n.settled)
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
func (n *Node) secrets(peers []peerRec) []meshkey.Private {
	s := []meshkey.Private{n.priv}
	for _, r := range peers {
		if k := r.psk(); !k.IsZero() {
			s = append(s, k)
		}
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

// PublicKey returns the node's public key, its identity on the mesh.
func (n *Node) PublicKey() meshkey.Public { return n.pub }

// Addresses returns the node's mesh addresses.
func (n *Node) Addresses() []netip.Addr { return slices.Clone(n.addrs) }

// ListenPort returns the UDP port the node's WireGuard socket listens on
// (the chosen one when Config.ListenPort was 0).
func (n *Node) ListenPort() uint16 { return n.port }

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
