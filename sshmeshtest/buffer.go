package sshmeshtest

import (
	"sync"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// Buffer is a bytes.Buffer that is safe to read while others write it,
// e.g. a server's log or a subprocess's stderr. The zero value is ready to
// use.
type Buffer struct{ b testkit.Buffer }

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) { return b.b.Write(p) }

// String returns what was written so far.
func (b *Buffer) String() string { return b.b.String() }

// WaitFor waits up to 20 s for s to appear in the buffer, and fails tb
// (showing what is there) if it does not.
func (b *Buffer) WaitFor(tb testing.TB, s string) {
	tb.Helper()
	b.b.WaitFor(tb, s)
}

// Clock is a clock a test moves by hand, for Server.Now, policy.Document.Now
// and the like.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock showing t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
