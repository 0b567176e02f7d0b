package recorder

import (
	"io"

	"github.com/sshmesh/sshmesh/meshkey"
)

// WriteFrameForTest and ReadFrameForTest let tests speak the protocol as a
// sender of their own would.
func WriteFrameForTest(w io.Writer, typ byte, p []byte) error { return writeFrame(w, typ, p) }

func ReadFrameForTest(r io.Reader) (byte, []byte, error) { return readFrame(r, MaxFrame) }

// PendingForTest returns the bytes of frames key's streams have begun and
// the recorder has not stored.
func PendingForTest(s *Server, key meshkey.Public) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if snd := s.senders[key]; snd != nil {
		return snd.pending
	}
	return 0
}
