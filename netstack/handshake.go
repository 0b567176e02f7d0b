package netstack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
	"golang.zx2c4.com/wireguard/device"
)

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
