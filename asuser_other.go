//go:build !linux

package sshmesh

// asLocalUser runs fn with the server's own rights: acting as another user
// on a thread of its own needs Linux, and off Linux a server serves only
// its own user.
func (c *serverConn) asLocalUser(fn func() error) error { return fn() }
