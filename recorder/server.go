package recorder

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

// Server is a recorder node: it stores the recordings that sshmesh servers
// stream to it, as asciicast v2 files under Dir/<node>/<YYYY-MM-DD>/<session>.cast
// (the node is the sender's name in the policy, from its mesh identity;
// the date is the recorder's, in UTC), each beside a <session>.json
// ([Meta]). Files are written append-only as frames arrive and synced to
// disk at least every SyncInterval and at the end; only what is synced is
// acknowledged. See [Server.ServeHTTP] for the page that lists and plays
// them.
type Server struct {
	// Dir holds the recordings. Required.
	Dir string

	// Identify names the mesh peer of a conn (a *policy.Document's Node):
	// a peer it does not name may neither send nor view. A conn that
	// carries its caller's identity from a coordinator (an
	// [sshmesh.IdentityConn], as a tailnet listener's conns do) is named
	// by that identity instead; Identify may be nil when every conn does.
	Identify func(meshkey.Public) (policy.Identity, bool)

	// Senders may stream recordings: node names, tag:NAME, owner emails,
	// or "*" (every node Identify names). Empty means nobody.
	Senders []string

	// Viewers may use the page: node names, tag:NAME, owner emails, or
	// "*". A viewer sees every recording. Empty means nobody.
	Viewers []string

	// Logger receives the log, including one "recording viewed" event per
	// recording a viewer opens. nil discards it.
	Logger *slog.Logger

	// SyncInterval bounds how long a stored byte waits for fsync (and so
	// for its acknowledgement). 0 means 1 s.
	SyncInterval time.Duration

	// IdleTimeout ends a stream whose sender sent nothing (not even a
	// ping) for this long; the recording is kept, marked incomplete. 0
	// means 60 s.
	IdleTimeout time.Duration

	// Addrs are the recorder's mesh addresses: the page answers only
	// requests whose Host names one of them (a web page elsewhere cannot
	// rebind a name of its own to the recorder). Empty refuses the page.
	Addrs []netip.Addr

	// MaxStreamsPerSender bounds how many recordings one sending node
	// (one WireGuard key) streams at once; more are refused. 0 means
	// DefaultMaxStreamsPerSender.
	MaxStreamsPerSender int

	// MaxStreamsPerCaller bounds how many of one sending node's
	// recordings may be of one caller (the start frame's "caller", which
	// the sender vouches for) at once, so that one user of a server
	// cannot take all of the server's streams and leave the others' fail-closed
	// sessions refused. 0 means DefaultMaxStreamsPerCaller.
	MaxStreamsPerCaller int

	// MaxRecordingBytes bounds one recording's event bytes; a stream that
	// goes over it is refused from then on (the recording is kept,
	// marked incomplete, and the sender's rule decides about the
	// session). 0 means DefaultMaxRecordingBytes.
	MaxRecordingBytes int64

	// MaxPendingBytesPerSender bounds the bytes of the frames one sending
	// node has begun and the recorder has not stored yet, over all its
	// streams (a frame counts from its header, at the size it claims; its
	// memory grows only as its bytes arrive). A frame that does not fit
	// waits, and TCP holds its bytes back, until the node's other frames
	// are stored; a frame alone always fits. 0 means
	// DefaultMaxPendingBytesPerSender.
	MaxPendingBytesPerSender int

	// Now is the clock for dates and times. nil means time.Now.
	Now func() time.Time

	mu        sync.Mutex
	ls        map[net.Listener]struct{}
	conns     map[net.Conn]*inbound
	senders   map[meshkey.Public]*sender // per sending node, while it has streams
	callers   map[callerKey]int          // streams in progress per sender and caller
	closed    bool
	closeCh   chan struct{}
	wg        sync.WaitGroup
	watchOnce sync.Once
}

// Meta is what a recorder keeps beside each recording: who sent it (from
// the mesh), what the sender said about the session, and how it ended.
type Meta struct {
	Node     string    `json:"node"`     // the sender, as the recorder's policy names its key
	Key      string    `json:"key"`      // the sender's WireGuard key
	Claim    Start     `json:"claim"`    // the sender's start frame
	Received time.Time `json:"received"` // when the stream began (recorder's clock)
	Ended    time.Time `json:"ended,omitzero"`
	Bytes    int64     `json:"bytes"`    // event bytes stored
	Duration float64   `json:"duration"` // seconds, the time of the last event
	Complete bool      `json:"complete"` // the sender ended the stream
	Error    string    `json:"error,omitempty"`
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Serve takes recording streams on l (a mesh listener, whose conns know
// their peer) until l fails or the server is closed.
func (s *Server) Serve(l net.Listener) error {
	if s.Dir == "" {
		return errors.New("recorder: Server.Dir is required")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	if s.ls == nil {
		s.ls, s.conns = map[net.Listener]struct{}{}, map[net.Conn]*inbound{}
	}
	s.ls[l] = struct{}{}
	s.mu.Unlock()
	s.watchOnce.Do(func() { go s.watch() })
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		in := &inbound{c: c, stop: make(chan struct{})}
		in.peer, in.known = sshmesh.PeerOf(c)
		s.conns[c] = in
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(in)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops the listeners and ends the streams (their recordings are
// synced and kept, marked incomplete).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	if s.closeCh != nil {
		select {
		case <-s.closeCh:
		default:
			close(s.closeCh)
		}
	}
	for l := range s.ls {
		l.Close()
	}
	for c, in := range s.conns {
		in.end("the recorder is shutting down")
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// matches reports whether id is one of the principals in list.
func matches(id policy.Identity, list []string) bool {
	for _, p := range list {
		switch {
		case p == "*":
			return true
		case strings.HasPrefix(p, "tag:"):
			if containsString(id.Tags, p) {
				return true
			}
		case strings.Contains(p, "@"):
			if id.Owner != "" && strings.EqualFold(id.Owner, p) {
				return true
			}
		case p == id.Node:
			return true
		}
	}
	return false
}

// identify names a conn's peer: by the identity its transport vouches
// for (a tailnet's coordinator), else by Identify from its mesh key. The
// stream's own words never name it.
func (s *Server) identify(p sshmesh.Peer) (policy.Identity, bool) {
	if p.Identity != nil {
		id := *p.Identity
		return id, id.Key == p.Key
	}
	if s.Identify == nil {
		return policy.Identity{}, false
	}
	return s.Identify(p.Key)
}

// serveConn stores one stream.
func (s *Server) serveConn(in *inbound) {
	c, peer := in.c, in.peer
	defer c.Close()
	log := s.logger().With("addr", c.RemoteAddr().String())
	if !in.known {
		log.Warn("recording refused: the conn does not know its mesh peer")
		return
	}
	id, named := s.identify(peer)
	log = log.With("peer", peer.Key.Short(), "node", id.Name())
	if !named || id.Node == "" || !matches(id, s.Senders) {
		log.Warn("recording refused: the node may not send recordings")
		writeFrame(c, frameRefused, []byte("this node may not send recordings here"))
		return
	}
	if n, ok := s.takeStream(peer.Key); !ok {
		log.Warn("recording refused: the node streams as many recordings as it may", "streams", n, "limit", s.maxStreams())
		writeFrame(c, frameRefused, fmt.Appendf(nil, "this node already streams %d recordings here, the recorder's limit", n))
		return
	}
	defer s.releaseStream(peer.Key)
	defer s.release(in)
	typ, p, err := s.readFrame(in, MaxFrame)
	if err != nil || typ != frameStart {
		log.Warn("recording refused: no start frame", "err", err)
		writeFrame(c, frameRefused, []byte("want a start frame"))
		return
	}
	st, err := parseStart(p)
	if err != nil {
		log.Warn("recording refused: bad start frame", "err", err)
		writeFrame(c, frameRefused, []byte(err.Error()))
		return
	}
	log = log.With("session", st.Session)
	ck := callerKey{peer.Key, st.Caller}
	if n, ok := s.takeCaller(ck); !ok {
		log.Warn("recording refused: the caller has as many recordings streaming as it may", "caller", st.Caller, "streams", n, "limit", s.maxPerCaller())
		writeFrame(c, frameRefused, fmt.Appendf(nil, "the caller %q already has %d recordings streaming here, the recorder's limit", st.Caller, n))
		return
	}
	defer s.releaseCaller(ck)
	rec, err := s.create(id, peer.Key, st)
	if err != nil {
		log.Error("recording refused: cannot store it", "err", err)
		writeFrame(c, frameRefused, []byte("the recorder cannot store the recording"))
		return
	}
	log = log.With("file", rec.path)
	log.Info("recording start", "user", st.User, "local_user", st.LocalUser, "caller", st.Caller)
	w := &ackWriter{c: c}
	if err := w.frame(frameAccepted, nil); err != nil {
		rec.finish(s.now(), false, err)
		return
	}
	stop := make(chan struct{})
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		s.syncLoop(rec, w, stop)
	}()
	complete, err := s.receive(in, rec)
	in.finish()
	close(stop)
	<-syncDone
	if err != nil {
		log.Warn("recording stream failed", "err", err, "bytes", rec.written)
		w.frame(frameRefused, []byte(err.Error()))
		defer lingerClose(c)
	}
	if ferr := rec.finish(s.now(), complete, err); ferr != nil {
		log.Error("recording not saved cleanly", "err", ferr)
		return
	}
	if complete {
		w.frame(frameAck, ackPayload(rec.synced))
	}
	log.Info("recording end", "bytes", rec.written, "complete", complete)
}

// refusalLinger bounds how long a refused stream's conn is read (and its
// data dropped) before it closes.
const refusalLinger = 5 * time.Second

// lingerClose ends our side of a conn whose stream was refused midway, and
// reads (and drops) what the sender still sends until it closes its side
// (at most refusalLinger): closing with the sender's data unread would
// reset the conn, and the reset can destroy the refusal frame before the
// sender reads it.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(refusalLinger))
	io.Copy(io.Discard, c)
}

func (s *Server) idle() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return 60 * time.Second
}

func (s *Server) syncInterval() time.Duration {
	if s.SyncInterval > 0 {
		return s.SyncInterval
	}
	return time.Second
}

// receive stores data frames until the end frame (complete) or an error.
func (s *Server) receive(in *inbound, rec *recording) (complete bool, err error) {
	for {
		typ, p, err := s.readFrame(in, MaxFrame)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return false, errors.New("the sender closed the stream without ending it")
			}
			return false, err
		}
		switch typ {
		case frameData:
			if rec.written+int64(len(p)) > s.maxBytes() {
				return false, fmt.Errorf("the recording is over the recorder's limit of %d bytes", s.maxBytes())
			}
			if err := rec.append(p); err != nil {
				return false, err
			}
		case framePing:
		case frameEnd:
			return true, nil
		default:
			return false, fmt.Errorf("unexpected frame %q", typ)
		}
	}
}

// syncLoop syncs what was written and acknowledges it, every interval.
func (s *Server) syncLoop(rec *recording, w *ackWriter, stop <-chan struct{}) {
	t := time.NewTicker(s.syncInterval())
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		n, err := rec.sync()
		if err != nil {
			return // no more acknowledgements: the sender's bound ends the session
		}
		if w.frame(frameAck, ackPayload(n)) != nil {
			return
		}
	}
}

// ackWriter writes frames to the sender from two goroutines.
type ackWriter struct {
	mu sync.Mutex
	c  net.Conn
}

func (w *ackWriter) frame(typ byte, p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return writeFrame(w.c, typ, p)
}

// recording is one stored stream.
type recording struct {
	mu       sync.Mutex
	f        *os.File
	path     string
	meta     Meta
	written  int64
	synced   int64
	lastTime float64
	failed   error
}

// create makes the recording's directory, file (header line synced) and
// meta file.
func (s *Server) create(id policy.Identity, key meshkey.Public, st Start) (*recording, error) {
	now := s.now().UTC()
	if !validSession(id.Node) {
		return nil, fmt.Errorf("node name %q is not usable as a directory", id.Node)
	}
	dir := filepath.Join(s.Dir, id.Node, now.Format("2006-01-02"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, st.Session+".cast")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	h := st.Header
	h.Version = 2
	if h.Timestamp == 0 {
		h.Timestamp = now.Unix()
	}
	line, _ := json.Marshal(h)
	rec := &recording{f: f, path: path, meta: Meta{Node: id.Node, Key: key.String(), Claim: st, Received: now}}
	if _, err := f.Write(append(line, '\n')); err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = rec.writeMeta()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		os.Remove(metaPath(path))
		return nil, err
	}
	return rec, nil
}

func metaPath(cast string) string { return strings.TrimSuffix(cast, ".cast") + ".json" }

// writeMeta replaces the meta file (write, sync, rename).
func (r *recording) writeMeta() error {
	b, err := json.MarshalIndent(r.meta, "", "  ")
	if err != nil {
		return err
	}
	tmp := metaPath(r.path) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, metaPath(r.path))
	}
	return err
}

// append checks that p is whole asciicast event lines and writes it.
func (r *recording) append(p []byte) error {
	last, err := checkEvents(p)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed != nil {
		return r.failed
	}
	if _, err := r.f.Write(p); err != nil {
		r.failed = fmt.Errorf("cannot store the recording: %w", err)
		return r.failed
	}
	r.written += int64(len(p))
	r.lastTime = max(r.lastTime, last)
	return nil
}

// sync syncs the file and returns how many event bytes are on disk.
func (r *recording) sync() (int64, error) {
	r.mu.Lock()
	n := r.written
	failed := r.failed
	r.mu.Unlock()
	if failed != nil {
		return 0, failed
	}
	if n == r.synced {
		return n, nil
	}
	if err := r.f.Sync(); err != nil {
		r.mu.Lock()
		r.failed = fmt.Errorf("cannot sync the recording: %w", err)
		r.mu.Unlock()
		return 0, err
	}
	r.synced = n
	return n, nil
}

// finish syncs and closes the file and writes the final meta.
func (r *recording) finish(now time.Time, complete bool, cause error) error {
	_, err := r.sync()
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	r.meta.Ended = now.UTC()
	r.meta.Bytes = r.synced
	r.meta.Duration = r.lastTime
	r.meta.Complete = complete && err == nil
	if cause != nil {
		r.meta.Error = cause.Error()
	}
	if merr := r.writeMeta(); err == nil {
		err = merr
	}
	return err
}
