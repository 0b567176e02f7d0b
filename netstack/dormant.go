package netstack

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/subtle"
	"hash"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/sshmesh/sshmesh/meshkey"
)

// This file keeps the WireGuard device small on a node with many peers.
//
// wireguard-go spends about 26 KiB on every peer it holds (two queues of
// 1024 slots, a staging queue, timers and two goroutines) whether the peer
// ever writes or not: a server listing 500 clients holds 13 MiB for them
// at rest. A peer whose endpoint the node does not know cannot be reached
// before it writes first, so the node keeps such a peer dormant: known to
// the node (its address table, Peers, PeerForAddr), absent from the device.
// When a handshake initiation arrives while some peers are dormant, the
// node opens it as the device would (the Noise IK responder's first steps
// from the WireGuard paper, §5.4.2: mac1, the initiator's static key, and
// the timestamp, which only the holder of that key's private half can
// seal); when the initiator is a dormant peer, the node adds the peer to
// the device and then hands the message on, and the device answers it as
// if the peer had been there all along. A peer once added stays on the
// device.
//
// Opening costs one X25519 for every initiation with a valid mac1 (its
// sender knows this node's public key) while some peers are dormant (two
// for a dormant peer's), before the device's own handshake rate limits
// apply; wakeChecksPerSecond bounds that work. An initiation over the
// bound goes to the device unopened: a dormant peer's is dropped there,
// and the peer retries in 5 s. So a flood of such initiations, from
// someone who knows the public key, delays the first connect of dormant
// peers for as long as it lasts; peers with an Endpoint are always on
// the device and unaffected.

// Noise IKpsk2 as WireGuard uses it (the paper's §5.4).
var (
	noiseConstruction = []byte("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")
	wgIdentifier      = []byte("WireGuard v1 zx2c4 Jason@zx2c4.com")
	wgLabelMac1       = []byte("mac1----")
)

// The handshake initiation message: type 1, 148 bytes.
const (
	initiationType   = 1
	initiationSize   = 148
	initEphemeralOff = 8
	initStaticOff    = initEphemeralOff + 32
	initTimestampOff = initStaticOff + 32 + chacha20poly1305.Overhead
	initMac1Off      = initTimestampOff + 12 + chacha20poly1305.Overhead
)

// wakeChecksPerSecond is how many initiations with a valid mac1 the node
// opens in a second while some peers are dormant.
const wakeChecksPerSecond = 1000

// startsDormant reports whether a peer that is not on the device yet stays
// off it until it writes: the node has no endpoint to reach it at.
func startsDormant(p Peer) bool { return !p.Endpoint.IsValid() }

// isDormant reports whether k is a dormant peer of the set; mu is held,
// outside SetPeers.
func (n *Node) isDormant(k meshkey.Public) bool {
	ps := n.byKey.get(k)
	return ps != nil && ps.dormant.Load()
}

// wake adds a dormant peer to the device when msg, a received handshake
// initiation, is its (see the top of this file). It runs on the device's
// receive path, before the device reads msg.
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
	// The device closes only after isClosed is set under mu, so while mu
	// is held here, IpcSet cannot wait for a closing device.
	if !n.isDormant(in.static) || n.isClosed || !n.resp.authentic(in) {
		return
	}
	ps := n.byKey.get(in.static)
	p := n.peerAt(int(ps.idx))
	var uapi strings.Builder
	writePeer(&uapi, p, false)
	if err := n.dev.IpcSet(uapi.String()); err != nil {
		n.log.Error("netstack: add a dormant peer to the WireGuard device", "peer", p.PublicKey.String(), "err", redactUAPIError(err, n.secrets(n.peers[ps.idx:ps.idx+1])...))
		return
	}
	ps.dormant.Store(false) // on the device: its packets are its own now
	n.dormantN.Add(-1)
	n.log.Debug("netstack: dormant peer woke: on the device from its first handshake", "peer", p.PublicKey.String())
}

// responder opens the handshake initiations sent to one node.
type responder struct {
	priv    *ecdh.PrivateKey
	chain   [blake2s.Size]byte // Hash(Construction)
	hash    [blake2s.Size]byte // Hash(Hash(chain || Identifier) || our public key)
	mac1Key [blake2s.Size]byte // Hash(Label-Mac1 || our public key)
}

func newResponder(priv meshkey.Private) (*responder, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return nil, err
	}
	pub := k.PublicKey().Bytes()
	r := &responder{priv: k}
	r.chain = blake2s.Sum256(noiseConstruction)
	r.hash = mixHash(mixHash(r.chain, wgIdentifier), pub)
	r.mac1Key = blake2s.Sum256(append(append([]byte(nil), wgLabelMac1...), pub...))
	return r, nil
}

// initiation is a handshake initiation opened as far as its static key.
type initiation struct {
	static meshkey.Public
	chain  [blake2s.Size]byte
	hash   [blake2s.Size]byte
	sealed []byte // the sealed timestamp
}

// open reads the initiator's static key from msg, a handshake initiation
// to this node. It reports false for anything else, or for a message whose
// mac1 or static key does not open. The key is not yet proof of anything:
// see authentic.
func (r *responder) open(msg []byte) (initiation, bool) {
	var in initiation
	if !r.addressed(msg) {
		return in, false
	}
	ephemeral := msg[initEphemeralOff:initStaticOff]
	chain := kdf1(r.chain[:], ephemeral)
	h := mixHash(r.hash, ephemeral)
	shared, ok := r.dh(ephemeral)
	if !ok {
		return in, false
	}
	chain, key := kdf2(chain[:], shared)
	sealedStatic := msg[initStaticOff:initTimestampOff]
	static, ok := openAEAD(key, sealedStatic, h[:])
	if !ok {
		return in, false
	}
	copy(in.static[:], static)
	in.chain = chain
	in.hash = mixHash(h, sealedStatic)
	in.sealed = msg[initTimestampOff:initMac1Off]
	return in, true
}

// addressed reports whether msg is a handshake initiation with a valid
// mac1 for this node: its sender knows our public key. It costs one
// BLAKE2s, no X25519.
func (r *responder) addressed(msg []byte) bool {
	if len(msg) != initiationSize || msg[0] != initiationType || msg[1] != 0 || msg[2] != 0 || msg[3] != 0 {
		return false
	}
	mac, _ := blake2s.New128(r.mac1Key[:])
	mac.Write(msg[:initMac1Off])
	return subtle.ConstantTimeCompare(mac.Sum(nil), msg[initMac1Off:initMac1Off+16]) == 1
}

// authentic reports whether in's timestamp opens with the key the
// initiator's static key shares with ours: only the holder of its
// private half can have sealed it.
func (r *responder) authentic(in initiation) bool {
	shared, ok := r.dh(in.static[:])
	if !ok {
		return false
	}
	_, key := kdf2(in.chain[:], shared)
	_, ok = openAEAD(key, in.sealed, in.hash[:])
	return ok
}

func (r *responder) dh(pub []byte) ([]byte, bool) {
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, false
	}
	s, err := r.priv.ECDH(p) // refuses the all-zero result of a low-order point
	return s, err == nil
}

func mixHash(h [blake2s.Size]byte, data []byte) [blake2s.Size]byte {
	d, _ := blake2s.New256(nil)
	d.Write(h[:])
	d.Write(data)
	var out [blake2s.Size]byte
	d.Sum(out[:0])
	return out
}

func newBlake2s() hash.Hash {
	d, _ := blake2s.New256(nil)
	return d
}

func hmacBlake2s(key []byte, data ...[]byte) [blake2s.Size]byte {
	m := hmac.New(newBlake2s, key)
	for _, d := range data {
		m.Write(d)
	}
	var out [blake2s.Size]byte
	m.Sum(out[:0])
	return out
}

// kdf1 and kdf2 are the paper's Kdf1 and Kdf2 (HKDF with HMAC-BLAKE2s).
func kdf1(key, input []byte) [blake2s.Size]byte {
	t0 := hmacBlake2s(key, input)
	return hmacBlake2s(t0[:], []byte{1})
}

func kdf2(key, input []byte) (t1, t2 [blake2s.Size]byte) {
	t0 := hmacBlake2s(key, input)
	t1 = hmacBlake2s(t0[:], []byte{1})
	t2 = hmacBlake2s(t0[:], t1[:], []byte{2})
	return t1, t2
}

// openAEAD opens sealed with key, a zero counter, and ad.
func openAEAD(key [blake2s.Size]byte, sealed, ad []byte) ([]byte, bool) {
	a, err := chacha20poly1305.New(key[:])
	if err != nil {
		return nil, false
	}
	var nonce [chacha20poly1305.NonceSize]byte
	out, err := a.Open(nil, nonce[:], sealed, ad)
	return out, err == nil
}

// budget allows n uses per second.
type budget struct {
	n     int
	mu    sync.Mutex
	start time.Time
	used  int
}

func (b *budget) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.start) >= time.Second {
		b.start, b.used = now, 0
	}
	if b.used >= b.n {
		return false
	}
	b.used++
	return true
}

// wakingBind is the device's bind, with a look at each received handshake
// initiation while some peers are dormant: wake adds the initiator to the
// device when it is one of them, before the device reads the message.
type wakingBind struct {
	conn.Bind
	wake func(msg []byte)
}

// Open opens the bind and watches its receive functions.
func (w *wakingBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	return openWrapped(w.Bind, port, w.watch)
}

func (w *wakingBind) watch(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
		for i := range n {
			if sizes[i] == initiationSize && bufs[i][0] == initiationType {
				w.wake(bufs[i][:initiationSize])
			}
		}
		return n, err
	}
}
