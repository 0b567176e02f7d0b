package recorder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/asciicast"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

// Target is one recorder node a rule's name resolved to.
type Target struct {
	Name string         // the node's name in the policy
	Key  meshkey.Public // its WireGuard key: the conn must reach this peer
	Addr netip.AddrPort // its mesh address and stream port
}

// Client is the sshmesh.Recorder that streams recordings to the recorders
// a session's rule names ("recorders"), trying them in order: the first
// that accepts records the session (as Tailscale's recorders do; a
// recorder that fails later is not replaced mid-session, the session then
// follows its rule's onRecordingFailure). Rules that name no recorder go
// to Local.
type Client struct {
	// Dial opens a mesh conn (a *netstack.Node's Dial). Required.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// Resolve turns one of a rule's recorder names (node name or tag:NAME)
	// into recorder nodes, in order. Required; see [MeshResolver].
	Resolve func(name string) ([]Target, error)

	// Local records the sessions of rules that name no recorder. nil
	// refuses them (each follows its rule's onRecordingFailure).
	Local sshmesh.Recorder

	// KeepLocal also gives the sessions streamed to a recorder to Local,
	// for a copy on the server. Off by default: the recording is meant to
	// leave the host.
	KeepLocal bool

	// AckTimeout bounds how long a recorder may take to accept a session,
	// and to acknowledge what it was sent: past it the recording has
	// failed (a fail-closed session ends with status 254). 0 means 10 s.
	AckTimeout time.Duration
}

func (c *Client) ackTimeout() time.Duration {
	if c.AckTimeout > 0 {
		return c.AckTimeout
	}
	return 10 * time.Second
}

// OpenRecording streams the session to the first of its rule's recorders
// that accepts it.
func (c *Client) OpenRecording(ctx context.Context, info sshmesh.RecordingInfo) (sshmesh.RecordingSink, error) {
	if len(info.Decision.Recorders) == 0 {
		if c.Local == nil {
			return nil, errors.New("the rule names no recorder and the server keeps no local recordings")
		}
		return c.Local.OpenRecording(ctx, info)
	}
	remote, err := c.openRemote(ctx, info)
	if err != nil {
		return nil, err
	}
	if !c.KeepLocal || c.Local == nil {
		return remote, nil
	}
	local, err := c.Local.OpenRecording(ctx, withoutRecorders(info))
	if err != nil {
		remote.Close()
		return nil, fmt.Errorf("local copy: %w", err)
	}
	return tee{remote, local}, nil
}

func withoutRecorders(info sshmesh.RecordingInfo) sshmesh.RecordingInfo {
	info.Decision.Recorders = nil
	return info
}

func (c *Client) openRemote(ctx context.Context, info sshmesh.RecordingInfo) (*stream, error) {
	st := Start{
		Version: 1, Session: info.Session, Caller: info.Identity.Name(), Owner: info.Identity.Owner,
		User: info.Identity.User, LocalUser: info.LocalUser, Kind: info.Kind, Command: info.Command,
		Input: info.Input, Header: info.Header, Rule: info.Decision.Rule,
	}
	start, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	var tried []string
	for _, name := range info.Decision.Recorders {
		targets, err := c.Resolve(name)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		for _, t := range targets {
			s, err := c.open(ctx, t, start, info)
			if err == nil {
				return s, nil
			}
			tried = append(tried, fmt.Sprintf("%s (%s): %v", t.Name, t.Addr, err))
		}
	}
	if len(tried) == 0 {
		return nil, fmt.Errorf("no recorder node for %s", strings.Join(info.Decision.Recorders, ", "))
	}
	return nil, fmt.Errorf("no recorder accepted the session: %s", strings.Join(tried, "; "))
}

// open dials t, sends the start frame and waits for its answer.
func (c *Client) open(ctx context.Context, t Target, start []byte, info sshmesh.RecordingInfo) (*stream, error) {
	bound := c.ackTimeout()
	dctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	conn, err := c.Dial(dctx, "tcp", t.Addr.String())
	if err != nil {
		return nil, err
	}
	if p, ok := sshmesh.PeerOf(conn); ok && p.Key != t.Key {
		conn.Close()
		return nil, fmt.Errorf("the conn reached peer %s, not the recorder's key %s", p.Key.Short(), t.Key.Short())
	}
	conn.SetDeadline(time.Now().Add(bound))
	if err := writeFrame(conn, frameStart, start); err != nil {
		conn.Close()
		return nil, err
	}
	typ, p, err := readFrame(conn, MaxFrame)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("no answer: %w", err)
	}
	switch typ {
	case frameAccepted:
	case frameRefused:
		conn.Close()
		return nil, fmt.Errorf("refused: %s", p)
	default:
		conn.Close()
		return nil, fmt.Errorf("unexpected answer frame %q", typ)
	}
	conn.SetDeadline(time.Time{})
	s := &stream{conn: conn, target: t, bound: bound, fail: info.Fail, done: make(chan struct{}), final: make(chan struct{})}
	now := time.Now().UnixNano()
	s.lastAck.Store(now)
	s.progress.Store(now)
	s.queue = newQueue(s)
	s.cast = asciicast.NewEventWriter(s.queue, info.Start, nil)
	go s.queue.send()
	go s.readAcks()
	go s.watch()
	return s, nil
}

// stream is one session's recording on its way to a recorder.
type stream struct {
	conn   net.Conn
	target Target
	bound  time.Duration
	fail   func(error)
	cast   *asciicast.Writer
	queue  *queue // event lines on their way to the conn

	wmu      sync.Mutex // frames are written whole
	sent     atomic.Int64
	acked    atomic.Int64
	lastAck  atomic.Int64 // unix nanos of the last acknowledgement
	progress atomic.Int64 // unix nanos when acked last caught up or grew
	closing  atomic.Bool
	refusal  atomic.Value // string: the recorder's reason, when it refused the stream
	failed   atomic.Bool
	done     chan struct{} // closed by Close
	final    chan struct{} // closed when the acknowledgements end
}

func (s *stream) Output(p []byte) error { return s.cast.Output(p) }
func (s *stream) Input(p []byte) error  { return s.cast.Input(p) }
func (s *stream) Resize(cols, rows int) error {
	return s.cast.Resize(cols, rows)
}

// frame writes one frame, failing when the recorder does not take it
// within the bound.
func (s *stream) frame(typ byte, p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(s.bound))
	if err := writeFrame(s.conn, typ, p); err != nil {
		return s.failWith(fmt.Errorf("recorder %s: %w", s.target.Name, err))
	}
	return nil
}

// failWith reports the stream's failure once (to the session) and returns err.
func (s *stream) failWith(err error) error {
	if !s.failed.Swap(true) && !s.closing.Load() && s.fail != nil {
		s.fail(err)
	}
	return err
}

// readAcks reads the recorder's acknowledgements until the conn ends.
func (s *stream) readAcks() {
	defer close(s.final)
	for {
		typ, p, err := readFrame(s.conn, MaxFrame)
		if err != nil {
			if !s.closing.Load() {
				s.failWith(fmt.Errorf("recorder %s: the stream ended: %w", s.target.Name, err))
			}
			return
		}
		switch typ {
		case frameAck:
			n, err := parseAck(p)
			if err != nil || n > s.sent.Load() {
				s.failWith(fmt.Errorf("recorder %s: bad acknowledgement", s.target.Name))
				s.conn.Close()
				return
			}
			now := time.Now().UnixNano()
			if n > s.acked.Swap(n) || n == s.sent.Load() {
				s.progress.Store(now)
			}
			s.lastAck.Store(now)
		case frameRefused:
			s.refusal.Store(string(p))
			s.failWith(fmt.Errorf("recorder %s refused the stream: %s", s.target.Name, p))
			s.conn.Close()
			return
		}
	}
}

// watch pings the recorder and fails the stream when it stops
// acknowledging within the bound.
func (s *stream) watch() {
	tick := time.NewTicker(min(time.Second, s.bound/4))
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		now := time.Now()
		if d := now.Sub(time.Unix(0, s.lastAck.Load())); d > s.bound {
			s.failWith(fmt.Errorf("recorder %s: no acknowledgement for %s", s.target.Name, d.Round(time.Second)))
			s.conn.Close()
			return
		}
		if s.acked.Load() < s.sent.Load() && now.Sub(time.Unix(0, s.progress.Load())) > s.bound {
			s.failWith(fmt.Errorf("recorder %s: has not stored what it was sent for %s", s.target.Name, s.bound))
			s.conn.Close()
			return
		}
		if s.frame(framePing, nil) != nil {
			s.conn.Close()
			return
		}
	}
}

// Close sends what is left and the end, waits for the recorder to
// acknowledge all of it (at most the bound) and closes the conn.
func (s *stream) Close() error {
	err := s.cast.Close()
	err = errors.Join(err, s.queue.drain())
	s.closing.Store(true)
	close(s.done)
	defer s.conn.Close()
	if err != nil || s.failed.Load() {
		return errors.Join(err, s.incomplete())
	}
	if err := s.frame(frameEnd, nil); err != nil {
		return err
	}
	select {
	case <-s.final:
	case <-time.After(s.bound):
	}
	if a, n := s.acked.Load(), s.sent.Load(); a != n {
		return errors.Join(fmt.Errorf("recorder %s acknowledged %d of %d bytes", s.target.Name, a, n), s.incomplete())
	}
	return nil
}

// incomplete is the error of a recording that did not reach the end, with
// the recorder's reason when it refused the stream.
func (s *stream) incomplete() error {
	if why, _ := s.refusal.Load().(string); why != "" {
		return fmt.Errorf("the recording is incomplete: recorder %s refused the stream: %s", s.target.Name, why)
	}
	return errors.New("the recording is incomplete")
}

// tee records to two sinks; the first one's errors count.
type tee struct{ a, b sshmesh.RecordingSink }

func (t tee) Output(p []byte) error { t.b.Output(p); return t.a.Output(p) }
func (t tee) Input(p []byte) error  { t.b.Input(p); return t.a.Input(p) }
func (t tee) Resize(c, r int) error { t.b.Resize(c, r); return t.a.Resize(c, r) }
func (t tee) Close() error          { return errors.Join(t.a.Close(), t.b.Close()) }

// MeshResolver resolves a rule's recorder names with the policy's nodes
// (a node name, or every node with a tag, in the document's order: nodes
// returns those a name stands for, as [policy.Document.NodesNamed] does)
// and the mesh's peers (peer returns the one with a key, as
// [netstack.Node.Peer] does; a node's address is the first single address
// of its AllowedIPs), at port.
func MeshResolver(nodes func(name string) []policy.Identity, peer func(meshkey.Public) (netstack.Peer, bool), port uint16) func(name string) ([]Target, error) {
	return func(name string) ([]Target, error) {
		var out []Target
		var missing []string
		for _, id := range nodes(name) {
			if id.Node != name && !containsString(id.Tags, name) {
				continue
			}
			addr, ok := peerAddr(peer, id.Key)
			if !ok {
				missing = append(missing, id.Name())
				continue
			}
			out = append(out, Target{Name: id.Name(), Key: id.Key, Addr: netip.AddrPortFrom(addr, port)})
		}
		if len(out) == 0 {
			if len(missing) > 0 {
				return nil, fmt.Errorf("%s is not a peer of this node (no single address in its AllowedIPs)", strings.Join(missing, ", "))
			}
			return nil, fmt.Errorf("no node in the policy is %s", name)
		}
		return out, nil
	}
}

// peerAddr is the first single address of the AllowedIPs of the peer with
// key.
func peerAddr(peer func(meshkey.Public) (netstack.Peer, bool), key meshkey.Public) (netip.Addr, bool) {
	p, ok := peer(key)
	if !ok {
		return netip.Addr{}, false
	}
	for _, pre := range p.AllowedIPs {
		if pre.IsSingleIP() {
			return pre.Addr(), true
		}
	}
	return netip.Addr{}, false
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
