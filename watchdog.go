package sshmesh

import (
	"context"
	"net"
	"sync"
	"time"
)

// connLink is what the conn's watchdog and revocation need of its
// transport: an *ssh.ServerConn, or a web terminal's WebSocket.
type connLink interface {
	// SendRequest sends a conn-level request; watch sends keepalives.
	SendRequest(name string, wantReply bool, payload []byte) (bool, []byte, error)
	Close() error
}

// watch arms the conn's watchdog, which sends keepalives and enforces the
// idle timeout, the rule's expiry and the sessions' duration limit at
// every tick until ctx ends. It returns at once: each tick is a timer's
// callback, and a keepalive a goroutine only while it waits for its
// reply, so an idle conn holds no goroutine for it.
func (c *serverConn) watch(ctx context.Context, sconn connLink) {
	s := c.srv
	interval := durationOr(s.KeepAliveInterval, 30*time.Second)
	tick := time.Duration(0)
	if interval > 0 {
		tick = interval
	}
	if s.IdleTimeout > 0 && (tick == 0 || s.IdleTimeout/4 < tick) {
		tick = s.IdleTimeout / 4
	}
	if (c.expires.Load() != 0 || c.decision.SessionDuration > 0) && (tick == 0 || tick > deadlineTick) {
		tick = deadlineTick
	}
	// lastProbe starts one interval back so the first tick probes; ticks
	// may come a little early, so half a tick of slack keeps probes at
	// every interval rather than every other one.
	w := &watchdog{c: c, sconn: sconn, interval: interval, tick: tick, lastProbe: time.Now().Add(-interval)}
	w.mu.Lock()
	defer w.mu.Unlock()
	c.mu.Lock()
	c.wd = w
	c.mu.Unlock()
	if tick > 0 { // else nothing to do until a reload brings an expiry
		w.t = time.AfterFunc(tick, w.fire)
	}
	w.stopCtx = context.AfterFunc(ctx, w.stop)
}

// checkDeadlines makes the conn's watchdog tick at least every
// deadlineTick from now on: a reload gave the conn an expiry its login
// did not have, and the watchdog picked its tick at login (the keepalive
// interval, or none at all).
func (c *serverConn) checkDeadlines() {
	c.mu.Lock()
	w := c.wd
	c.mu.Unlock()
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended || (w.t != nil && w.tick <= deadlineTick) {
		return
	}
	w.tick = deadlineTick
	if w.t == nil {
		w.t = time.AfterFunc(w.tick, w.fire)
	} else {
		w.t.Reset(w.tick)
	}
}

// watchdog is the state of a conn's watch, between its ticks.
type watchdog struct {
	c              *serverConn
	sconn          connLink
	interval, tick time.Duration

	mu        sync.Mutex
	t         *time.Timer
	stopCtx   func() bool // undoes the context.AfterFunc that stops w
	ended     bool        // no more ticks
	missed    int         // keepalives unanswered in a row
	probing   bool        // a keepalive waits for its reply
	lastProbe time.Time
}

// stop ends the watch (its ctx is done, or the conn closed).
func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.end()
}

// end ends the watch; mu is held.
func (w *watchdog) end() {
	w.ended = true
	if w.t != nil {
		w.t.Stop()
	}
	if w.stopCtx != nil {
		w.stopCtx()
	}
}

// fire is one tick.
func (w *watchdog) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	c, s, now := w.c, w.c.srv, time.Now()
	if s.IdleTimeout > 0 && now.Sub(time.Unix(0, c.lastActive.Load())) > s.IdleTimeout {
		c.setCloseReason("idle timeout")
		c.log().Info("closing idle conn", "idle_timeout", s.IdleTimeout)
		w.sconn.Close()
		w.end()
		return
	}
	c.enforceDeadlines()
	w.t.Reset(w.tick)
	if w.interval <= 0 || now.Sub(w.lastProbe) < w.interval-w.tick/2 {
		return
	}
	w.lastProbe = now
	// As sshd: anything heard from the client proves it alive (a
	// keepalive reply can queue behind a bulk upload).
	if now.Sub(time.Unix(0, c.heard.Load())) < w.interval {
		w.missed = 0
		return
	}
	if w.probing {
		if w.missed++; w.missed >= intOr(s.KeepAliveCountMax, 3) {
			c.setCloseReason("keepalives unanswered")
			c.log().Info("closing conn: keepalives unanswered")
			w.sconn.Close()
			w.end()
		}
		return
	}
	w.probing = true
	go func() {
		_, _, err := w.sconn.SendRequest("keepalive@openssh.com", true, nil)
		w.probed(err)
	}()
}

// probed takes a keepalive's answer. An error means the link is gone
// (an SSH conn's request fails only then, and a web terminal's ping waits
// for its pong until the WebSocket closes); should a link fail a
// keepalive and stay open, it is closed all the same: a conn must not
// outlive its watchdog, which alone enforces the idle timeout, the rule's
// expiry and the sessions' duration.
func (w *watchdog) probed(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.probing = false
	if err != nil {
		w.sconn.Close()
		w.end()
		return
	}
	w.missed = 0
}

// deadlineTick is how often rule expiry and session duration are checked.
const deadlineTick = 250 * time.Millisecond

// heardConn records when the client last sent anything (for keepalives).
type heardConn struct {
	net.Conn
	c *serverConn
}

func (h heardConn) Read(p []byte) (int, error) {
	n, err := h.Conn.Read(p)
	if n > 0 {
		h.c.heard.Store(time.Now().UnixNano())
	}
	return n, err
}
