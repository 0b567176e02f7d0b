// The streams in progress: reading their frames within the sender's budget, and ending the ones the
// recorder no longer allows.

package recorder

import (
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/sshmesh/sshmesh"
)

// inbound is one conn a sender opened, while the recorder serves it.
type inbound struct {
	c     net.Conn
	peer  sshmesh.Peer
	known bool // the conn knows its mesh peer (else it is refused)

	buf   []byte // the payload memory, kept between frames up to keptPayload
	held  int    // pending bytes the frame in progress holds of the sender's budget
	ended atomic.Pointer[string]
	stop  chan struct{} // closed by end
}

var errStreamEnded = errors.New("the stream ended")

// keptPayload is the largest payload memory a stream keeps for its next
// frame; a larger one goes back to the heap once stored. It is small: a
// stream that waits holds it outside the sender's pending budget, so 1024
// idle streams of one sender hold at most 4 MiB (bulk frames, larger
// than 64 KiB, were never kept).
const keptPayload = payloadFirst

// streamDone marks a stream whose frames are all read (finish): end then
// does nothing, so a refusal already sent lingers undisturbed and is not
// counted again.
var streamDone = "the stream is done"

// finish marks the stream's reading over (see streamDone).
func (in *inbound) finish() { in.ended.CompareAndSwap(nil, &streamDone) }

// end stops the stream with why: its read returns why as the error, and
// serveConn then refuses the stream with it (the recording is kept,
// incomplete). It reports whether this call ended it.
func (in *inbound) end(why string) bool {
	if !in.ended.CompareAndSwap(nil, &why) {
		return false
	}
	close(in.stop)
	in.c.SetReadDeadline(time.Now()) // wakes a read in progress
	return true
}

// endedWith returns why the recorder ended the stream, else err.
func (in *inbound) endedWith(err error) error {
	if why := in.ended.Load(); why != nil {
		return errors.New(*why)
	}
	return err
}

// readFrame reads the stream's next frame, waiting at most the idle
// timeout for it. The payload's bytes count against the sender's pending
// budget from the header on, until the next readFrame or release; its
// memory grows only as they arrive.
func (s *Server) readFrame(in *inbound, max int) (byte, []byte, error) {
	s.release(in)
	in.c.SetReadDeadline(time.Now().Add(s.idle()))
	if in.ended.Load() != nil { // after the deadline: end's wake-up is not lost
		return 0, nil, in.endedWith(nil)
	}
	typ, n, err := readHeader(in.c, max)
	if err != nil {
		return 0, nil, in.endedWith(err)
	}
	if err := s.takePending(in, n); err != nil {
		return 0, nil, in.endedWith(err)
	}
	p, err := readPayload(in.c, in.buf, n)
	if cap(p) <= keptPayload {
		in.buf = p[:0]
	}
	if err != nil {
		return 0, nil, in.endedWith(err)
	}
	return typ, p, nil
}

// release gives back the budget the stream's last frame held.
func (s *Server) release(in *inbound) {
	if in.held > 0 {
		s.releasePending(in.peer.Key, in.held)
		in.held = 0
	}
}

// Recheck ends the streams in progress whose sender the recorder would
// refuse now: the conn's address no longer belongs to its key (the peer
// left the mesh, or on a tailnet the coordinator no longer vouches for it
// as it did), Identify no longer names it, or it no longer matches
// Senders (after a policy reload). Each such sender is told why (an 'N'
// frame: its rule then decides about the session); the recording is
// kept, marked incomplete with the reason. Serve runs it every second;
// call it after changing what Identify answers to apply that at once. It
// returns how many streams it ended.
func (s *Server) Recheck() int {
	s.mu.Lock()
	ins := make([]*inbound, 0, len(s.conns))
	for _, in := range s.conns {
		ins = append(ins, in)
	}
	s.mu.Unlock()
	n := 0
	for _, in := range ins {
		if why := s.disallowed(in); why != "" && in.end(why) {
			s.logger().Warn("recording stream ended: "+why, "peer", in.peer.Key.Short(), "addr", in.c.RemoteAddr().String())
			n++
		}
	}
	return n
}

// disallowed says why the recorder would refuse in's sender now, or "".
func (s *Server) disallowed(in *inbound) string {
	if !in.known {
		return "" // refused as it is
	}
	if !in.peer.Current() { // through any wrapper of the mesh conn, as PeerOf found it
		return "the sending node left the mesh (or its coordinator no longer vouches for it)"
	}
	if id, named := s.identify(in.peer); !named || id.Node == "" || !matches(id, s.Senders) {
		return "this node may no longer send recordings here (the recorder's policy changed)"
	}
	return ""
}

// recheckInterval is how often Serve runs Recheck.
const recheckInterval = time.Second

// watch runs Recheck every recheckInterval until the server closes.
func (s *Server) watch() {
	t := time.NewTicker(recheckInterval)
	defer t.Stop()
	done := s.closing()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			s.Recheck()
		}
	}
}
