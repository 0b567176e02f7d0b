// Package recorder keeps session recordings off the hosts they describe: a
// [Server] on a mesh node (`sshmesh recorder`) stores the recordings that
// sshmesh servers stream to it, and a [Client] is the sshmesh.Recorder
// that streams them.
//
// # Protocol
//
// A framed stream over one TCP conn on the mesh, to the recorder's mesh
// address on [DefaultPort]; docs/recorder.md describes it in full. Every
// frame is a type byte, a 4-byte big-endian payload length (at most
// [MaxFrame]) and the payload.
//
// The sender sends 'S' (start: a JSON [Start]) once, then 'D' (data: whole
// asciicast v2 event lines), 'P' (ping, empty) and finally 'E' (end,
// empty). The recorder answers 'A' (accepted, empty) or 'N' (refused: the
// reason as text, then it closes the conn), then 'K' (acknowledged: the
// 8-byte big-endian count of 'D' payload bytes it has written and synced
// to disk) at least every sync interval and after 'E'.
//
// Who sent a recording is the mesh peer of the conn (its WireGuard key), as
// the recorder's node resolves it, never anything in the stream: a sender
// writes only under its own node's directory.
package recorder

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/sshmesh/sshmesh/asciicast"
)

// DefaultPort is the recorder's stream port on its mesh addresses.
const DefaultPort = 9422

// MaxFrame is the largest frame payload either side sends or accepts.
const MaxFrame = 1 << 20

// Frame types.
const (
	frameStart    = 'S'
	frameData     = 'D'
	framePing     = 'P'
	frameEnd      = 'E'
	frameAccepted = 'A'
	frameRefused  = 'N'
	frameAck      = 'K'
)

// Start is the first frame of a stream: what the sending server says about
// the session. The recorder stores it beside the recording as the
// sender's claim; where the recording goes follows from the conn's mesh
// identity, not from these fields.
type Start struct {
	Version   int              `json:"version"`           // 1
	Session   string           `json:"session"`           // the session id: letters, digits, - _ . (not first)
	Node      string           `json:"node,omitempty"`    // the sending node's name, as it says
	Caller    string           `json:"caller"`            // who logged in: node name of the client
	Owner     string           `json:"owner,omitempty"`   // the caller node's owner
	User      string           `json:"user"`              // the login name asked for
	LocalUser string           `json:"localUser"`         // the account the session ran as
	Kind      string           `json:"kind"`              // shell, exec or subsystem
	Command   string           `json:"command,omitempty"` // exec command or subsystem name
	Input     bool             `json:"input,omitempty"`   // input ("i") events may come
	Header    asciicast.Header `json:"header"`            // the cast's header line
	Rule      string           `json:"rule,omitempty"`    // the policy rule that let the session in
}

// writeFrame writes one frame.
func writeFrame(w io.Writer, typ byte, payload []byte) error {
	if len(payload) > MaxFrame {
		return fmt.Errorf("recorder: frame of %d bytes, over %d", len(payload), MaxFrame)
	}
	buf := make([]byte, 5, 5+len(payload))
	buf[0] = typ
	binary.BigEndian.PutUint32(buf[1:], uint32(len(payload)))
	_, err := w.Write(append(buf, payload...))
	return err
}

// readFrame reads one frame; payloads over max are an error. The
// payload's memory grows as its bytes arrive (see readPayload), never to
// the size a frame only claims.
func readFrame(r io.Reader, max int) (byte, []byte, error) {
	typ, n, err := readHeader(r, max)
	if err != nil {
		return 0, nil, err
	}
	p, err := readPayload(r, nil, n)
	if err != nil {
		return 0, nil, err
	}
	return typ, p, nil
}

// readHeader reads a frame's type and payload length; a length over max
// is an error.
func readHeader(r io.Reader, max int) (byte, int, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, 0, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if int64(n) > int64(max) {
		return 0, 0, fmt.Errorf("frame %q of %d bytes, over %d", h[0], n, max)
	}
	return h[0], int(n), nil
}

// A payload's memory runs ahead of the bytes that came by at most
// payloadFirst at first, then by as much as came, and never by more than
// payloadStep (besides append's own rounding).
const (
	payloadFirst = 4 << 10
	payloadStep  = 64 << 10
)

// readPayload reads an n-byte payload into buf's memory (from buf[:0]),
// growing it as the bytes arrive: a sender that claims a large frame and
// sends nothing costs at most payloadFirst.
func readPayload(r io.Reader, buf []byte, n int) ([]byte, error) {
	p := buf[:0]
	for len(p) < n {
		if len(p) == cap(p) {
			p = slices.Grow(p, min(n-len(p), payloadStep, max(len(p), payloadFirst)))
		}
		k, err := r.Read(p[len(p):min(n, cap(p))])
		p = p[:len(p)+k]
		if err != nil && len(p) < n {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return p, err
		}
	}
	return p, nil
}

func ackPayload(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }

func parseAck(p []byte) (int64, error) {
	if len(p) != 8 {
		return 0, errors.New("bad acknowledgement frame")
	}
	return int64(binary.BigEndian.Uint64(p)), nil
}

func parseStart(p []byte) (Start, error) {
	var st Start
	if err := json.Unmarshal(p, &st); err != nil {
		return st, fmt.Errorf("start frame: %w", err)
	}
	if st.Version != 1 {
		return st, fmt.Errorf("start frame: version %d, want 1", st.Version)
	}
	if !validSession(st.Session) {
		return st, fmt.Errorf("start frame: session %q is not letters, digits, - _ . (not first), at most 128", st.Session)
	}
	if st.Header.Width <= 0 || st.Header.Height <= 0 || st.Header.Width > 10000 || st.Header.Height > 10000 {
		return st, fmt.Errorf("start frame: header size %dx%d", st.Header.Width, st.Header.Height)
	}
	return st, nil
}

// validSession reports whether s is usable as a file name as it is.
func validSession(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
