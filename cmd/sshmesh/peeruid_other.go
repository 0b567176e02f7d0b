//go:build !linux

package main

import (
	"errors"
	"net"
)

// peerUIDSupported: off Linux the proxy cannot tell which local user
// connects over loopback TCP.
const peerUIDSupported = false

func loopbackPeerUID(net.Conn) (uint32, error) { return 0, errors.ErrUnsupported }
