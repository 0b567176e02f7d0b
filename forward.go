package sshmesh

import (
	"context"

	"golang.org/x/crypto/ssh"
)

// Port, socket and agent forwarding (ssh -L, -D, -R, -A), gated per rule.
// The conn and session code calls the hooks below; everything about
// forwarding lives in this file and its helpers.

// ForwardHandler lets an application decide forwarding by code instead of
// by the policy decision's LocalForward, RemoteForward and AgentForward.
type ForwardHandler interface{}

// openChannel serves a channel type other than "session". It reports
// whether it handled (accepted or rejected) the channel.
func (c *serverConn) openChannel(ctx context.Context, nch ssh.NewChannel) bool { return false }

// globalRequest serves a conn-level request such as tcpip-forward. It
// reports whether it handled (and replied to) the request.
func (c *serverConn) globalRequest(ctx context.Context, req *ssh.Request) bool { return false }

// closeForwards releases what forwarding holds when the conn ends:
// listeners, agent sockets and their directories.
func (c *serverConn) closeForwards() {}

// extraRequest serves a session request the session code does not know,
// such as auth-agent-req@openssh.com; started tells whether the shell,
// command or subsystem has started. handled reports whether it is a
// forwarding request; ok is the reply.
func (s *Session) extraRequest(req *ssh.Request, started bool) (handled, ok bool) {
	return false, false
}
