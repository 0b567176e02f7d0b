package sshmesh

import (
	"crypto/rand"
	"encoding/base32"

	"github.com/sshmesh/sshmesh/policy"
)

// The audit log: one slog event per step of a conn, with fixed keys.
//
//	conn accepted   conn peer node owner addr
//	auth decision   conn peer node owner addr user local_user action rule rule_pos message
//	session start   conn session peer user local_user kind command pty term recorded
//	session end     conn session peer local_user exit_status signal duration_s bytes_in bytes_out
//	conn closed     conn peer addr user local_user reason
//
// and, where they happen:
//
//	check started / approved / denied    conn (started) peer node local_user rule ...
//	forward start / end / refused        conn peer addr user local_user rule kind target (bytes_up bytes_down, reason; package forward)
//	access revoked / access expired      conn peer reason or rule
//
// conn ties a conn's events together; session (conn-N) a session's, and is
// also in the session's environment as SSHMESH_SESSION_ID. Every event of a
// web terminal's conn ([Server.ServeWebTerminal]) also has via=web; its
// keepalives are WebSocket pings.

// newID returns a short random id for a conn.
func newID() string {
	var b [10]byte
	rand.Read(b[:])
	return base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])[:12]
}

func (s *Server) logConnAccepted(c *serverConn) {
	var id policy.Identity
	if p, ok := s.currentPolicy().(policy.Identifier); ok {
		id, _ = p.Node(c.peer.Key)
	}
	c.log().Info("conn accepted", "node", id.Node, "owner", id.Owner, "addr", c.peer.Addr.String())
}
