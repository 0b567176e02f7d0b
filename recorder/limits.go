// The recorder's limits: streams per sender and per caller, the bytes a sender has in flight, and the
// size of one recording.

package recorder

import (
	"fmt"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
)

// Defaults of Server's limits.
const (
	DefaultMaxStreamsPerSender            = 1024
	DefaultMaxStreamsPerCaller            = 128
	DefaultMaxRecordingBytes        int64 = 16 << 30
	DefaultMaxPendingBytesPerSender       = 64 << 20
)

// sender is what the recorder counts of one sending node (one WireGuard
// key) while it has streams.
type sender struct {
	streams int           // streams in progress
	pending int           // bytes of frames begun and not yet stored, over its streams
	freed   chan struct{} // closed when pending falls; nil until a frame waits
}

func (s *Server) maxStreams() int {
	if s.MaxStreamsPerSender > 0 {
		return s.MaxStreamsPerSender
	}
	return DefaultMaxStreamsPerSender
}

func (s *Server) maxPerCaller() int {
	if s.MaxStreamsPerCaller > 0 {
		return s.MaxStreamsPerCaller
	}
	return DefaultMaxStreamsPerCaller
}

// callerKey names a caller of one sending node.
type callerKey struct {
	sender meshkey.Public
	caller string
}

// takeCaller counts a stream of caller's from sender, unless it has as
// many as it may.
func (s *Server) takeCaller(k callerKey) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.callers == nil {
		s.callers = map[callerKey]int{}
	}
	n := s.callers[k]
	if n >= s.maxPerCaller() {
		return n, false
	}
	s.callers[k] = n + 1
	return n + 1, true
}

func (s *Server) releaseCaller(k callerKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.callers[k]--; s.callers[k] <= 0 {
		delete(s.callers, k)
	}
}

func (s *Server) maxBytes() int64 {
	if s.MaxRecordingBytes > 0 {
		return s.MaxRecordingBytes
	}
	return DefaultMaxRecordingBytes
}

// takeStream counts a stream of key's, unless it has as many as it may.
func (s *Server) takeStream(key meshkey.Public) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.senders == nil {
		s.senders = map[meshkey.Public]*sender{}
	}
	snd := s.senders[key]
	if snd == nil {
		snd = &sender{}
		s.senders[key] = snd
	}
	if snd.streams >= s.maxStreams() {
		return snd.streams, false
	}
	snd.streams++
	return snd.streams, true
}

func (s *Server) releaseStream(key meshkey.Public) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if snd := s.senders[key]; snd != nil {
		if snd.streams--; snd.streams <= 0 {
			delete(s.senders, key)
		}
	}
}

func (s *Server) maxPending() int {
	if s.MaxPendingBytesPerSender > 0 {
		return s.MaxPendingBytesPerSender
	}
	return DefaultMaxPendingBytesPerSender
}

// takePending counts n bytes of a frame in's sender has begun against its
// budget, waiting (while TCP holds the rest back) for the sender's other
// frames to be stored when they hold it all; a frame alone always fits.
// The wait ends with an error after the idle timeout, or when the stream
// ends. The stream must be counted (takeStream).
func (s *Server) takePending(in *inbound, n int) error {
	var timer *time.Timer
	for {
		s.mu.Lock()
		snd := s.senders[in.peer.Key]
		if snd.pending == 0 || snd.pending+n <= s.maxPending() {
			snd.pending += n
			in.held = n
			s.mu.Unlock()
			return nil
		}
		if snd.freed == nil {
			snd.freed = make(chan struct{})
		}
		freed := snd.freed
		s.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(s.idle())
			defer timer.Stop()
		}
		select {
		case <-freed:
		case <-in.stop:
			return errStreamEnded
		case <-timer.C:
			return fmt.Errorf("the node's frames in progress held the recorder's limit of %d bytes for %s", s.maxPending(), s.idle())
		}
	}
}

// releasePending gives back n bytes of key's budget.
func (s *Server) releasePending(key meshkey.Public, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snd := s.senders[key]
	snd.pending -= n
	if snd.freed != nil {
		close(snd.freed)
		snd.freed = nil
	}
}
