// Package sshmesh serves SSH over an embedded WireGuard mesh, deciding who
// may log in, and as whom, from the caller's WireGuard key and a policy.
// There are no SSH keys, passwords or bastions.
//
// # The path of one connection
//
// A mesh node (package netstack) decrypts WireGuard packets inside the
// process and hands TCP conns to a [Listener], which stamps each conn with
// the [Peer] whose key the mesh proved. [Server] runs the SSH handshake,
// offers only the "none" auth method and asks its [policy.Policy] whether
// that peer may log in with the name it asked for. An accepted conn's
// sessions go to a [Handler]: by default [LoginHandler], which runs the
// login shell or command as the mapped local user (package session).
//
// # Identity
//
// [PeerOf] returns the peer of a conn. Inside a handler,
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
// handler ends it with [Session.Exit] or by returning.
package sshmesh
