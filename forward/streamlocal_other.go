//go:build !linux

package forward

import (
	"context"

	"golang.org/x/crypto/ssh"
)

// Unix-socket forwarding needs Linux (openat, O_PATH, renameat2); elsewhere
// it is refused.

// DirectStreamLocal refuses direct-streamlocal@openssh.com: not supported
// on this platform.
func DirectStreamLocal(ctx context.Context, c Conn, nch ssh.NewChannel) {
	refused(c, LocalSocket, "", "not supported on this platform")
	nch.Reject(ssh.Prohibited, "socket forwarding is not supported on this server")
}

// StreamLocalForward refuses streamlocal-forward@openssh.com: not supported
// on this platform.
func StreamLocalForward(ctx context.Context, c Conn, req *ssh.Request) (bool, []byte) {
	refused(c, RemoteSocket, "", "not supported on this platform")
	return false, nil
}

// CancelStreamLocalForward refuses cancel-streamlocal-forward@openssh.com.
func CancelStreamLocalForward(ctx context.Context, c Conn, req *ssh.Request) (bool, []byte) {
	return false, nil
}
