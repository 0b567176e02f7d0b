package sshmesh

// Handler serves one SSH session: a shell, a command or a subsystem. It is
// called in its own goroutine once the client has asked for one of them, and
// the session ends when it returns (with exit status 0 unless it called
// [Session.Exit] or [Session.ExitSignal]).
type Handler interface {
	ServeSSH(s *Session)
}

// HandlerFunc adapts an ordinary function to [Handler].
type HandlerFunc func(s *Session)

// ServeSSH calls f(s).
func (f HandlerFunc) ServeSSH(s *Session) { f(s) }

// Middleware wraps a Handler with another, for concerns such as logging or
// access checks that belong around any session.
type Middleware func(next Handler) Handler

// Chain returns h wrapped in mw, with mw[0] the outermost: it runs first.
func Chain(h Handler, mw ...Middleware) Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}
