//go:build !linux

package sshmesh

import (
	"context"

	"golang.org/x/crypto/ssh"
)

// Unix-socket forwarding needs Linux (openat, O_PATH, renameat2); elsewhere
// it is refused.

func (c *serverConn) directStreamLocal(ctx context.Context, nch ssh.NewChannel) {
	c.forwardRefused(LocalSocket, "", "not supported on this platform")
	nch.Reject(ssh.Prohibited, "socket forwarding is not supported on this server")
}

func (c *serverConn) streamLocalForward(ctx context.Context, payload []byte) bool {
	c.forwardRefused(RemoteSocket, "", "not supported on this platform")
	return false
}

func (c *serverConn) cancelStreamLocalForward(payload []byte) bool { return false }
