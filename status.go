package sshmesh

import "time"

// ConnStatus is an authenticated conn as [Server.Conns] reports it.
type ConnStatus struct {
	ID        string    // ties the conn's audit events together
	Identity  Identity  // who is logged in
	LocalUser string    // the local account the policy mapped it to
	Rule      string    // the rule that let it in, e.g. "ssh[2]"
	Since     time.Time // when the conn was accepted
	Sessions  []SessionStatus
}

// SessionStatus is an open session of a conn whose handler has started.
type SessionStatus struct {
	ID       string    // the conn's id and a number; SSHMESH_SESSION_ID
	Kind     string    // "shell", "exec" or "subsystem"
	Command  string    // the exec command or the subsystem name
	Pty      bool      // the client asked for a terminal
	Started  time.Time // when its handler started
	BytesIn  int64     // from the client (stdin)
	BytesOut int64     // to the client (stdout and stderr)
}

// Conns reports the authenticated conns and their open sessions, like
// who(1) for the server. It is safe to call at any time.
func (s *Server) Conns() []ConnStatus {
	var out []ConnStatus
	for _, c := range s.authenticatedConns() {
		cs := ConnStatus{ID: c.id, Identity: c.identity, LocalUser: c.decision.LocalUser, Rule: c.decision.Rule, Since: c.accepted}
		c.mu.Lock()
		for sess := range c.open {
			if st, ok := sess.status(); ok {
				cs.Sessions = append(cs.Sessions, st)
			}
		}
		c.mu.Unlock()
		out = append(out, cs)
	}
	return out
}

// status reports the session once its handler has started.
func (s *Session) status() (SessionStatus, bool) {
	at := s.startedAt.Load()
	if at == 0 {
		return SessionStatus{}, false
	}
	// kind, raw and pty were set before the handler started (startedAt's
	// store comes after them).
	return SessionStatus{ID: s.id, Kind: s.kind, Command: s.raw, Pty: s.pty != nil, Started: time.Unix(0, at),
		BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load()}, true
}
