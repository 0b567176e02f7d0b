// Package netstack runs a WireGuard node inside the process: wireguard-go's
// device on an in-process gVisor TCP/IP stack. The node needs no root, no
// TUN device and no OS routes; it owns one UDP socket, and its TCP conns
// exist only inside the process.
//
// # Identity
//
// WireGuard delivers a decrypted packet only when its inner source address
// lies in the sending peer's allowed IPs. The source address of a mesh conn
// therefore names the peer that sent it, and [Node.PeerForAddr] looks it up
// in a longest-prefix table built from the node's own [Config], with the
// same meaning as the device's table. A prefix may belong to one peer only:
// [New] and [Node.SetPeers] refuse a list that gives it to two, and a
// [Node.SetPeers] that gives it to another peer than before moves it, and
// the identity with it. While SetPeers applies a change, addresses whose
// owner changes resolve to no peer.
//
// Resolve a conn's peer when it is accepted: a conn that was accepted
// before a SetPeers that moved or removed its prefix keeps the identity it
// had then.
//
// # Configuration
//
// [Config] is a plain struct; [ParseConfig], [ParseConfigBytes] and
// [LoadConfig] read the wg-quick file format, so an existing wg-quick file
// (or the output of `wg genkey`/`wg pubkey`) works as it is. Keys come from package
// [github.com/sshmesh/sshmesh/meshkey]; private and preshared keys are never
// printed, logged or echoed in errors.
//
// # Conns
//
// [Node.Listen] and [Node.Dial] work like package net's, for "tcp", "tcp4"
// and "tcp6" on the node's mesh addresses; ":22" listens on all of them.
// Accepted conns carry the peer's mesh address in RemoteAddr (a
// *net.TCPAddr).
//
// # The UDP socket
//
// With Config.BindAddress set, the socket binds to that address only (one
// address family); without it, to all addresses of both families (on
// Linux one dual-stack socket; elsewhere wireguard-go's standard sockets).
// It reads and writes datagrams in batches
// (recvmmsg/sendmmsg) and, on Linux, with UDP GSO and GRO: a run of
// equal-sized datagrams to one peer goes to the kernel as one, and
// coalesced datagrams are read as one (falling back to one datagram per
// packet if the kernel refuses).
//
// # Data path
//
// The stack's TCP hands its link segments of up to 64 KiB (GSO); the link
// cuts them into MTU-sized packets, with their checksums computed once
// each, straight into the WireGuard device's buffers, a batch at a time.
// Packets on the wire always carry valid checksums (the peer may be a
// kernel WireGuard, which trusts them). Received packets are not checked
// again: WireGuard's AEAD has authenticated every byte, which is why the
// kernel's WireGuard skips that check too. The device hands the stack one
// peer's packets at a time. TCP runs with SACK, RACK loss detection (with
// tail loss probes), receive buffer auto-tuning up to a 2 MiB advertised
// window (SSH's channel window), and Reno (gVisor's CUBIC can drop the
// congestion window to zero and stop a conn for good; see
// tcpCongestionControl).
//
// # Congestion control
//
// gVisor offers two controllers, Reno (its default) and CUBIC, both
// loss-based: at 1% random loss and 40 ms either holds about 12 packets
// in flight (well under 1 MiB/s), as the kernel's CUBIC does; only a
// model-based controller such as BBR keeps going. gVisor cannot take a
// controller from outside: its interface (congestionControl in
// tcp/snd.go) is unexported, the sender picks one in a closed switch
// (sender.initCongestionControl, tcp/snd.go), and the names a stack
// accepts are fixed in newProtocol (tcp/protocol.go). BBR would need a
// fork of gVisor's tcp package, plus the delivery-rate sampling and
// pacing BBR relies on, which that package does not have.
//
// wireguard-go keeps each packet it holds in a 64 KiB buffer of its own,
// so a node lets at most a few hundred packets into its device in each
// direction (8 MiB of those buffers, whatever the TCP windows);
// the rest wait in the link's queue and in the kernel's socket buffer,
// at the size they are. A busy node's memory stays bounded under bulk.
//
// Unless Config.DisableGRO is set, the link first coalesces each received batch's
// in-order TCP segments of one flow (addresses and ports, so never two
// peers' packets) into segments of up to 64 KiB, with valid checksums,
// so the stack handles a few large segments instead of many small ones.
// It is our own coalescer, scoped to one batch, not gVisor's NIC GRO
// (shared per-NIC state; Tailscale saw it crash). It is fuzzed, raced,
// and tested in bulk against wireguard-go with the kernel's TCP.
//
// # Peers at rest
//
// wireguard-go spends about 26 KiB and two goroutines on every peer it
// holds. A peer without an Endpoint cannot be reached before it writes
// first, so the node keeps it dormant: in [Node.Peers] and the address
// table, not on the device. Its first handshake initiation wakes it: the
// node opens the message as the device would (mac1, static key,
// timestamp), adds the peer to the device and then hands the message on,
// so the handshake is answered at once. A woken peer stays on the device.
// A server listing thousands of clients pays for the ones that connect.
//
// # Startup
//
// New configures the WireGuard device completely before it brings it up, so
// the first handshake is never sent half-configured (WireGuard would retry
// only after 5 s). [Node.WaitHandshake] waits for a completed handshake,
// for tests and tools that must not sleep.
package netstack
