//go:build !linux

package netstack

import "golang.zx2c4.com/wireguard/conn"

// allAddressesBind is the bind for a node without a BindAddress: elsewhere
// than on Linux, wireguard-go's own (an IPv6 socket there refuses IPv4
// destinations, and Windows has no batch calls in x/net).
func allAddressesBind() conn.Bind { return conn.NewStdNetBind() }
