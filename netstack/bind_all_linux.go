package netstack

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/conn"
)

// allAddressesBind is the bind for a node without a BindAddress: on Linux,
// our own, on one dual-stack socket (Linux takes IPv4 destinations on an
// IPv6 socket, UDP GSO included), so the batch size is ours.
func allAddressesBind() conn.Bind { return newAddrBind(netip.Addr{}) }
