package sshmesh

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// failingKeepalives is a link whose keepalives fail while it stays open,
// as a web terminal's ping did when its pong was late: the watchdog must
// not take that for the link's end and stop enforcing the conn's limits.
type failingKeepalives struct{ closed chan struct{} }

func (l failingKeepalives) SendRequest(string, bool, []byte) (bool, []byte, error) {
	return false, nil, errors.New("failed to wait for pong: context deadline exceeded")
}

func (l failingKeepalives) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

// TestFailedKeepaliveClosesTheLink: a keepalive that fails on a link still
// open closes the link, so no conn outlives the watchdog that enforces its
// idle timeout, the rule's expiry and the sessions' duration (a web
// terminal whose client stopped answering pings kept its session past all
// three).
func TestFailedKeepaliveClosesTheLink(t *testing.T) {
	s := &Server{KeepAliveInterval: 20 * time.Millisecond, KeepAliveCountMax: 1000, IdleTimeout: time.Hour}
	c := &serverConn{srv: s, accepted: time.Now(), logger: slog.New(slog.DiscardHandler)}
	c.lastActive.Store(time.Now().UnixNano())
	c.heard.Store(time.Now().Add(-time.Hour).UnixNano()) // nothing heard: the first tick probes
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	l := failingKeepalives{closed: make(chan struct{})}
	c.watch(ctx, l)
	select {
	case <-l.closed:
	case <-time.After(20 * time.Second):
		t.Fatal("a keepalive failed and the link stayed open: the watchdog stopped with the conn still up")
	}
}
