package netstack

import (
	"fmt"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"
)

// This file is the one place that creates the in-process TCP/IP stack; a
// faster link endpoint of our own can replace it here alone.

// newStack returns a TUN device backed by a gVisor stack holding addrs, and
// the stack's socket API. The device reports no events, in particular not
// the "up" the stock one sends at once: the caller configures the WireGuard
// device fully and then brings it up itself. (Brought up before it is
// configured, a device can send its first handshake unconfigured and lose
// it; WireGuard retries only after 5 s.)
func newStack(addrs []netip.Addr, mtu int) (dev *gatedTUN, tnet *wgnetstack.Net, err error) {
	inner, tnet, err := wgnetstack.CreateNetTUN(addrs, nil, mtu)
	if err != nil {
		return nil, nil, fmt.Errorf("create gVisor stack: %w", err)
	}
	return &gatedTUN{Device: inner, events: make(chan tun.Event)}, tnet, nil
}

// gatedTUN is a tun.Device that reports no events: it hides the "up" event
// the stock netstack TUN sends at creation.
type gatedTUN struct {
	tun.Device
	events    chan tun.Event // never sent on; closed by Close
	closeOnce sync.Once
}

// Events returns a channel that only closes, when the device closes.
func (g *gatedTUN) Events() <-chan tun.Event { return g.events }

// Close closes the stack and the event channel (ending the device's event
// goroutine).
func (g *gatedTUN) Close() error {
	var err error
	g.closeOnce.Do(func() {
		close(g.events)
		err = g.Device.Close()
	})
	return err
}
