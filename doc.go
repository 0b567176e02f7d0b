// Package sshmesh serves SSH over an embedded WireGuard mesh, deciding who
// may log in, and as whom, from the caller's WireGuard key and a policy.
// There are no SSH keys, passwords or bastions.
//
// # The path of one connection
//
// A mesh node (package netstack) decrypts WireGuard packets inside the
// process and hands out TCP conns that know the peer whose key carried
// them ([PeerConn]; a [Listener] does the same for other transports), and
// [Server.Serve] takes the node's listener as it is. [Server] runs the SSH handshake,
// offers only the "none" auth method and asks its [policy.Policy] whether
// that peer may log in with the name it asked for. An accepted conn's
// sessions go to a [Handler]: by default [LoginHandler], which runs the
// login shell or command as the mapped local user (package session).
//
// # Identity
//
// [PeerOf] returns the peer of a conn; a program that is not an SSH
// server learns its caller from the node alone (netstack's Node.WhoIs and
// Conn.PeerKey). Inside a handler,
// [Session.Identity] gives the caller's key, mesh address, and the node
// name, owner and tags the policy knows; [Session.LocalUser] the account
// the policy mapped it to; [Session.Decision] the rule that decided.
//
// # Handlers
//
// A [Handler] is to SSH what an http.Handler is to HTTP: [HandlerFunc]
// adapts a function, [Middleware] and [Chain] wrap one. A [Session] reads
// the client's stdin and writes its stdout, and carries the command, the
// environment the rule allows, the PTY, window changes and signals; the
// handler ends it with [Session.Exit] or by returning. Its Context is done
// when the session ends or Shutdown begins; its WindowChanges, Signals and
// Breaks are closed when it ends.
//
// # Extending the protocol
//
// [Server.Subsystems] serve named subsystems (an in-process SFTP server)
// with a Handler of their own; [Server.Channels] and
// [Server.GlobalRequests] serve channel types and global requests of an
// embedder's, with the conn as a typed [ConnInfo]. They run only for
// authenticated conns, and a registered name replaces a built-in one.
// Port, socket and agent forwarding are such features: package forward's
// handlers, which the server registers by default after the maps, serve a
// ConnInfo too; [Server.Forwarding] or the policy's rule decides what they
// may do.
package sshmesh
