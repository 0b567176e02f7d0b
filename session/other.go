//go:build !linux

package session

import "context"

// Process is a running session. This platform has none.
type Process struct{}

// Start returns ErrUnsupported: sessions need Linux.
func Start(ctx context.Context, r Request) (*Process, error) { return nil, ErrUnsupported }

// Pid returns 0.
func (p *Process) Pid() int { return 0 }

// TTY returns "".
func (p *Process) TTY() string { return "" }

// Wait returns ErrUnsupported.
func (p *Process) Wait() (Exit, error) { return Exit{}, ErrUnsupported }

// Done returns a closed channel.
func (p *Process) Done() <-chan struct{} { c := make(chan struct{}); close(c); return c }

// Resize returns ErrUnsupported.
func (p *Process) Resize(cols, rows, width, height uint32) error { return ErrUnsupported }

// Break returns ErrUnsupported.
func (p *Process) Break(ms uint32) error { return ErrUnsupported }

// Signal returns ErrUnsupported.
func (p *Process) Signal(name string) error { return ErrUnsupported }

// CheckAccount applies nothing: this platform has no sessions.
func CheckAccount(ctx context.Context, rules HostRules, a Account) (notice string, err error) {
	return "", nil
}

// Validate reports an error when h asks for PAM, which needs Linux.
func (h HostRules) Validate() error {
	if h.PAMService != "" {
		return ErrUnsupported
	}
	return nil
}
