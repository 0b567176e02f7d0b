//go:build !linux

package forward

// asLocalUser runs fn with the server's own rights: acting as another user
// on a thread of its own needs Linux, and off Linux a server serves only
// its own user.
func asLocalUser(c Conn, fn func() error) error { return fn() }
