//go:build !linux

package sshmesh

// Agent forwarding needs Linux (see agent_linux.go); elsewhere it is refused.

type agentSocket struct{}

func (a *agentSocket) Close() error { return nil }

func (s *Session) agentRequest(started bool) bool {
	s.conn.forwardRefused(Agent, "", "not supported on this platform")
	return false
}
