//go:build !linux

package netstack_test

import (
	"net"
	"testing"
)

// wgTunnel skips: the reference tunnel needs Linux network namespaces.
func wgTunnel(b *testing.B) (net.Listener, func() (net.Conn, error)) {
	b.Skip("no wireguard-go tunnel to compare with: needs Linux network namespaces")
	return nil, nil
}
