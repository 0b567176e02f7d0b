package sshmesh

import (
	"net"
	"time"
)

// Startup limits: conns that have not finished authentication hold a slot,
// capped in all (MaxStartups) and per peer (MaxStartupsPerPeer). A conn
// over a cap waits in its peer's queue, bounded in length and in time
// (LoginGraceTime), and starts when a slot frees; beyond the queue it is
// closed. Queues are served round the peers, so a flooding peer holds its
// own slots and queue and never the others'.
//
// A queued conn is not read until it starts, so whatever its peer writes
// into it waits in the node's TCP stack: with sshmesh's netstack, at most
// the initial receive window of 32 KiB per conn (about 46 KiB of memory
// with gVisor's chunks), since the window grows only when the application
// reads. So one peer's queue costs at most about 46 MiB, and all queues
// together about 92 MiB. (A conn from another listener costs what that
// listener's stack buffers for an unread conn.)

const (
	maxQueuedPerPeer = 1024
	maxQueued        = 2048
)

// admit starts c, queues it, or closes it.
func (s *Server) admit(c net.Conn, p Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.logger().Warn("conn dropped", "peer", p.Key.String(), "addr", p.Addr.String(), "reason", "server is shutting down")
		c.Close()
		return
	}
	if s.perPeer == nil {
		s.perPeer = make(map[[32]byte]int)
		s.conns = make(map[*serverConn]struct{})
		s.queued = make(map[[32]byte][]*serverConn)
	}
	sc := &serverConn{srv: s, nc: c, peer: p, id: newID(), accepted: time.Now()}
	sc.logger = s.logger().With("conn", sc.id, "peer", p.Key.String())
	sc.lastActive.Store(sc.accepted.UnixNano())
	if s.canStart(p.Key) {
		s.start(sc)
		return
	}
	if len(s.queued[p.Key]) >= maxQueuedPerPeer || s.nqueued >= maxQueued {
		s.logger().Warn("conn dropped", "peer", p.Key.String(), "addr", p.Addr.String(),
			"reason", "too many conns waiting to authenticate (MaxStartups, MaxStartupsPerPeer)")
		c.Close()
		return
	}
	s.conns[sc] = struct{}{}
	s.queued[p.Key] = append(s.queued[p.Key], sc)
	s.nqueued++
	sc.queueTimer = time.AfterFunc(s.loginGraceTime(), func() { s.expireQueued(sc) })
	sc.log().Debug("conn waits for a startup slot", "addr", p.Addr.String(),
		"startups", s.startups, "peer_startups", s.perPeer[p.Key], "queued", s.nqueued)
}

func (s *Server) canStart(k [32]byte) bool {
	return s.startups < intOr(s.MaxStartups, 256) && s.perPeer[k] < intOr(s.MaxStartupsPerPeer, 32)
}

// start gives c a startup slot and serves it. s.mu is held.
func (s *Server) start(c *serverConn) {
	c.startup = true
	s.startups++
	s.perPeer[c.peer.Key]++
	s.conns[c] = struct{}{}
	go func() {
		s.logConnAccepted(c)
		c.serve()
	}()
}

// startQueued starts queued conns while slots are free, taking one from
// each peer in turn. s.mu is held.
func (s *Server) startQueued() {
	for progress := true; progress && s.nqueued > 0 && !s.closed; {
		progress = false
		for k, q := range s.queued {
			if len(q) == 0 || !s.canStart(k) {
				continue
			}
			c := q[0]
			if len(q) == 1 {
				delete(s.queued, k)
			} else {
				s.queued[k] = q[1:]
			}
			s.nqueued--
			c.queueTimer.Stop()
			s.start(c)
			progress = true
		}
	}
}

// unqueue removes c from its peer's queue, reporting whether it was there.
// s.mu is held.
func (s *Server) unqueue(c *serverConn) bool {
	q := s.queued[c.peer.Key]
	for i, qc := range q {
		if qc == c {
			s.queued[c.peer.Key] = append(q[:i:i], q[i+1:]...)
			if len(s.queued[c.peer.Key]) == 0 {
				delete(s.queued, c.peer.Key)
			}
			s.nqueued--
			return true
		}
	}
	return false
}

// expireQueued closes c when it waited in the queue for LoginGraceTime.
func (s *Server) expireQueued(c *serverConn) {
	s.mu.Lock()
	waited := s.unqueue(c)
	s.mu.Unlock()
	if waited {
		c.log().Info("conn closed", "addr", c.peer.Addr.String(),
			"reason", "waited for a startup slot for the whole login grace time")
		c.nc.Close()
		s.forget(c)
	}
}

// dropQueued closes every queued conn (Shutdown, Close). s.mu is held.
func (s *Server) dropQueued() {
	for k, q := range s.queued {
		for _, c := range q {
			c.queueTimer.Stop()
			c.log().Info("conn closed", "addr", c.peer.Addr.String(),
				"reason", "server shut down while the conn waited for a startup slot")
			c.nc.Close()
			delete(s.conns, c)
		}
		delete(s.queued, k)
	}
	s.nqueued = 0
}

// authenticated releases c's startup slot.
func (s *Server) authenticated(c *serverConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseStartup(c)
}

// releaseStartup frees c's startup slot and starts queued conns. s.mu is
// held.
func (s *Server) releaseStartup(c *serverConn) {
	if !c.startup {
		return
	}
	c.startup = false
	s.startups--
	if s.perPeer[c.peer.Key]--; s.perPeer[c.peer.Key] <= 0 {
		delete(s.perPeer, c.peer.Key)
	}
	s.startQueued()
}

// reserveConn takes one of the peer's MaxConnsPerPeer slots for c, or
// reports that the peer has none left.
func (s *Server) reserveConn(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.connSlot {
		return true
	}
	if max := intOr(s.MaxConnsPerPeer, 100); max > 0 && s.authed[c.peer.Key] >= max {
		return false
	}
	if s.authed == nil {
		s.authed = make(map[[32]byte]int)
	}
	s.authed[c.peer.Key]++
	c.connSlot = true
	return true
}
