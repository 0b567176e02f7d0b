package recorder

import "io"

// WriteFrameForTest and ReadFrameForTest let tests speak the protocol as a
// sender of their own would.
func WriteFrameForTest(w io.Writer, typ byte, p []byte) error { return writeFrame(w, typ, p) }

func ReadFrameForTest(r io.Reader) (byte, []byte, error) { return readFrame(r, MaxFrame) }
