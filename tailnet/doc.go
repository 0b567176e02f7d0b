// Package tailnet serves sshmesh on an existing tailnet: a Go program joins
// a Tailscale network (headscale, or Tailscale's hosted control plane) as a
// node of its own with tsnet, and hands the SSH server conns whose caller
// the coordinator vouches for (WhoIs: node key, node name, user login,
// tags). The policy then names callers by login, group and tag, with no
// WireGuard keys to distribute by hand.
//
// A [Node] is the tailnet node; [Node.Listen] returns a listener whose
// conns implement [sshmesh.IdentityConn], so [sshmesh.Server.Serve] serves
// them as it serves a mesh node's. A conn's PeerCurrent turns false when the
// caller's node leaves the tailnet, its key expires, or the coordinator
// changes what it says about it (its user, its tags): the server then ends
// its sessions. The node learns of such changes from the netmap updates
// tsnet reports (the IPN bus), not by polling.
//
// The node uploads no logs to Tailscale's logging service unless
// [Config.UploadLogs] is set (it sets TS_NO_LOGS_NO_SUPPORT for the
// process). The package is a module of its own so that programs that never
// join a tailnet do not carry tsnet (about 20 MB of binary).
package tailnet
