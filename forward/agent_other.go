//go:build !linux

package forward

import "context"

// Agent forwarding needs Linux (see agent_linux.go); elsewhere it is refused.

type agentSocket struct{}

func (a *agentSocket) Close() error { return nil }

// AgentRequest refuses auth-agent-req@openssh.com: not supported on this
// platform.
func AgentRequest(ctx context.Context, c Conn, started bool) (socket string, ok bool) {
	refused(c, Agent, "", "not supported on this platform")
	return "", false
}
