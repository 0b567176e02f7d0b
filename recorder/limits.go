// The recorder's limits: streams per sender and per caller, and the size of one recording.

package recorder

import "github.com/sshmesh/sshmesh/meshkey"

// Defaults of Server's limits.
const (
	DefaultMaxStreamsPerSender       = 1024
	DefaultMaxStreamsPerCaller       = 128
	DefaultMaxRecordingBytes   int64 = 16 << 30
)

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

// takeStream counts a stream of sender's, unless it has as many as it may.
func (s *Server) takeStream(sender meshkey.Public) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams == nil {
		s.streams = map[meshkey.Public]int{}
	}
	n := s.streams[sender]
	if n >= s.maxStreams() {
		return n, false
	}
	s.streams[sender] = n + 1
	return n + 1, true
}

func (s *Server) releaseStream(sender meshkey.Public) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[sender]--; s.streams[sender] <= 0 {
		delete(s.streams, sender)
	}
}
