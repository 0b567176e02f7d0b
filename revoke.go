package sshmesh

import (
	"context"
	"fmt"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

// Access taken away ends the sessions it no longer allows: a policy change
// (SetPolicy), a peer leaving the mesh (ClosePeer), a rule that expires and
// a session that reaches its rule's sessionDuration.

// policyBox holds a policy set by SetPolicy (atomic.Pointer needs a type).
type policyBox struct{ p policy.Policy }

// currentPolicy returns the policy set by SetPolicy, else s.Policy.
func (s *Server) currentPolicy() policy.Policy {
	if b := s.policy.Load(); b != nil {
		return b.p
	}
	return s.Policy
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// SetPolicy replaces the policy for new logins and re-evaluates every
// authenticated conn: a conn whose login the new policy refuses, or maps
// to another local user, gets "access revoked by policy change" on its
// sessions' stderr and is closed. The others go on untouched (their rule's
// expiry follows the new decision). It returns the number of conns closed.
func (s *Server) SetPolicy(p policy.Policy) int {
	s.policy.Store(&policyBox{p})
	closed := 0
	for _, c := range s.authenticatedConns() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d, err := p.Evaluate(ctx, c.request)
		cancel()
		if err != nil {
			// A policy that cannot decide does not end working sessions.
			c.log().Error("policy re-evaluation failed; conn kept", "err", err)
			continue
		}
		if !d.Allowed() || d.LocalUser != c.decision.LocalUser {
			c.log().Info("access revoked", "user", c.request.User,
				"local_user", c.decision.LocalUser, "action", d.Action.String(), "rule", d.Rule, "rule_pos", d.RulePos)
			c.revoke("access revoked by policy change")
			closed++
			continue
		}
		var exp int64
		if !d.Expires.IsZero() {
			exp = d.Expires.UnixNano()
		}
		c.expires.Store(exp)
		if exp != 0 {
			c.checkDeadlines()
		}
	}
	return closed
}

// watchPeers ends the conns whose peer left the mesh (its address no
// longer resolves to its key, e.g. after netstack.Node.SetPeers removed
// it) or, on a tailnet, whose caller the coordinator no longer vouches for
// as at login (an [IdentityConn]'s PeerCurrent, which the transport flips
// on netmap changes), checking every peerCheckInterval until done is closed.
func (s *Server) watchPeers(done <-chan struct{}) {
	t := time.NewTicker(peerCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		for _, c := range s.authenticatedConns() {
			if !c.peer.Current() && !c.revoked.Swap(true) {
				reason := "peer removed from the mesh"
				if c.peer.Identity != nil {
					reason = "access revoked: the coordinator no longer vouches for this node as at login (it left the tailnet, expired, or changed user or tags)"
				}
				c.log().Info("access revoked", "reason", reason)
				go c.revoke(reason)
			}
		}
	}
}

// peerCheckInterval is how often watchPeers looks.
const peerCheckInterval = 500 * time.Millisecond

// ClosePeer ends every conn of the peer with key, telling its sessions
// why (message), for example after the peer was removed from the mesh
// (netstack.Node.SetPeers). It returns the number of conns closed.
func (s *Server) ClosePeer(key meshkey.Public, message string) int {
	n := 0
	for _, c := range s.authenticatedConns() {
		if c.peer.Key == key {
			c.log().Info("access revoked", "reason", message)
			c.revoke(message)
			n++
		}
	}
	return n
}

func (s *Server) authenticatedConns() []*serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*serverConn
	for c := range s.conns {
		c.mu.Lock()
		ok := c.link != nil
		c.mu.Unlock()
		if ok {
			out = append(out, c)
		}
	}
	return out
}

// revoke tells every open session of c why, then closes c. The message
// gets at most half a second to reach a client that does not read.
func (c *serverConn) revoke(message string) {
	c.setCloseReason(message)
	c.mu.Lock()
	sessions := make([]*Session, 0, len(c.open))
	for s := range c.open {
		sessions = append(sessions, s)
	}
	sconn := c.link
	c.mu.Unlock()
	done := make(chan struct{}, len(sessions))
	for _, s := range sessions {
		go func() {
			s.message(message)
			done <- struct{}{}
		}()
	}
	timeout := time.After(500 * time.Millisecond)
	for range sessions {
		select {
		case <-done:
		case <-timeout:
		}
	}
	if sconn != nil {
		sconn.Close()
	}
	c.nc.Close()
}

// enforceDeadlines ends the conn when its rule has expired, and each
// session that has run longer than the rule's sessionDuration.
func (c *serverConn) enforceDeadlines() {
	now := c.srv.now()
	if exp := c.expires.Load(); exp != 0 && now.UnixNano() >= exp {
		c.log().Info("access expired", "rule", c.decision.Rule, "rule_pos", c.decision.RulePos)
		go c.revoke("access expired: the rule that allowed this login has expired")
		c.expires.Store(0)
		return
	}
	limit := c.decision.SessionDuration
	if limit <= 0 {
		return
	}
	c.mu.Lock()
	var over []*Session
	for s := range c.open {
		if !s.started.IsZero() && now.Sub(s.started) >= limit {
			over = append(over, s)
		}
	}
	c.mu.Unlock()
	for _, s := range over {
		go s.abort(fmt.Sprintf("session ended: the rule allows sessions of at most %v", limit))
	}
}
