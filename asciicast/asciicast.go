// Package asciicast writes and reads terminal recordings in the asciicast
// v2 format (https://docs.asciinema.org/manual/asciicast/v2/): a JSON
// header line, then one JSON array per event, [time, code, data], where
// code is "o" (output), "i" (input) or "r" (resize, data "COLSxROWS").
// The files play in the stock `asciinema play` and `sshmesh replay`.
package asciicast

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Header is the first line of a recording.
type Header struct {
	Version   int               `json:"version"`             // always 2
	Width     int               `json:"width"`               // terminal columns at the start
	Height    int               `json:"height"`              // terminal rows at the start
	Timestamp int64             `json:"timestamp,omitempty"` // start, in Unix seconds
	Env       map[string]string `json:"env,omitempty"`       // TERM and SHELL
	Title     string            `json:"title,omitempty"`     // who, as whom, what
}

// Event codes.
const (
	Output = "o"
	Input  = "i"
	Resize = "r"
)

// Event is one line after the header.
type Event struct {
	Time float64 // seconds since the start of the recording
	Code string  // Output, Input or Resize
	Data string  // the bytes printed or typed (UTF-8), or "COLSxROWS"
}

// LineAppender is an output that takes event lines into a buffer of its
// own: a [Writer] whose output is one appends each line there in place,
// instead of encoding it into a buffer of the Writer's and writing that (a
// copy saved). AppendLine calls line at most once, with its buffer, and
// keeps what line returns: the buffer with one more whole event line.
// Package recorder's stream queue is one.
type LineAppender interface {
	AppendLine(line func(buf []byte) []byte) error
}

// Writer writes a recording. Its methods are safe for concurrent use.
type Writer struct {
	mu      sync.Mutex
	out     io.Writer
	lines   LineAppender // out, when it is one
	buf     []byte       // the event being written, reused
	f       *os.File     // nil unless made by Create
	start   time.Time
	now     func() time.Time
	partial map[string][]byte // an unfinished UTF-8 sequence per code
	err     error
}

// Create creates the file at path (mode 0600; it must not exist yet) and
// writes h to it. Close syncs the file to disk.
func Create(path string, h Header) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	w, err := NewWriter(f, h, nil)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	w.f = f
	return w, nil
}

// NewWriter writes h to out and returns a Writer for the events. now is the
// clock (nil means time.Now); h.Version is set to 2 and a zero Timestamp to
// the current time.
func NewWriter(out io.Writer, h Header, now func() time.Time) (*Writer, error) {
	if now == nil {
		now = time.Now
	}
	w := &Writer{out: out, now: now, start: now(), partial: map[string][]byte{}}
	w.lines, _ = out.(LineAppender)
	h.Version = 2
	if h.Timestamp == 0 {
		h.Timestamp = w.start.Unix()
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	if _, err := out.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	return w, nil
}

// NewEventWriter returns a Writer of events only, with no header line,
// timed from start: for a stream whose header travels separately (package
// recorder sends it in its own frame). now is the clock (nil means
// time.Now).
func NewEventWriter(out io.Writer, start time.Time, now func() time.Time) *Writer {
	if now == nil {
		now = time.Now
	}
	w := &Writer{out: out, now: now, start: start, partial: map[string][]byte{}}
	w.lines, _ = out.(LineAppender)
	return w
}

// Output records data the terminal printed.
func (w *Writer) Output(data []byte) error { return w.event(Output, data) }

// Input records data the user typed.
func (w *Writer) Input(data []byte) error { return w.event(Input, data) }

// Resize records a new terminal size.
func (w *Writer) Resize(cols, rows int) error {
	return w.event(Resize, []byte(strconv.Itoa(cols)+"x"+strconv.Itoa(rows)))
}

func (w *Writer) event(code string, data []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	// Keep a multi-byte character split across writes for the next event,
	// so the JSON string holds it whole instead of two replacement runes.
	if p := w.partial[code]; len(p) > 0 {
		data = append(p, data...)
		w.partial[code] = nil
	}
	if code != Resize {
		if cut := incompleteTail(data); cut > 0 {
			w.partial[code] = append([]byte(nil), data[len(data)-cut:]...)
			data = data[:len(data)-cut]
		}
	}
	if len(data) == 0 {
		return nil
	}
	t := w.now().Sub(w.start).Seconds()
	for len(data) > 0 {
		n := eventCut(data)
		if err := w.write(t, code, data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// MaxEventData is the most data one event carries: a longer write is
// several events with the same time, cut between characters, so that an
// event line stays under a megabyte (at most six bytes of JSON per byte).
const MaxEventData = 64 << 10

// eventCut returns how much of data the next event takes: all of it, or
// at most MaxEventData bytes ending on a character boundary.
func eventCut(data []byte) int {
	if len(data) <= MaxEventData {
		return len(data)
	}
	// Hold back only a character the cut would split: a complete one
	// before it stays whole even when stray bytes follow.
	return MaxEventData - incompleteTail(data[:MaxEventData])
}

// write writes one event line with one Write to the output.
func (w *Writer) write(t float64, code string, data []byte) error {
	if w.lines != nil {
		if err := w.lines.AppendLine(func(buf []byte) []byte { return AppendEvent(buf, t, code, data) }); err != nil {
			w.err = err
			return err
		}
		return nil
	}
	w.buf = AppendEvent(w.buf[:0], t, code, data)
	if _, err := w.out.Write(w.buf); err != nil {
		w.err = err
		return err
	}
	return nil
}

// incompleteTail returns the length of an unfinished UTF-8 sequence at the
// end of b (0 when b ends on a character boundary).
func incompleteTail(b []byte) int {
	for i := 1; i <= 3 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < 0x80 {
			return 0
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return i
			}
			return 0
		}
	}
	return 0
}

// Close writes what is held back (an unfinished character) and, for a file made by Create, syncs and
// closes it.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var err error
	for _, code := range []string{Output, Input} {
		if p := w.partial[code]; len(p) > 0 && w.err == nil {
			w.partial[code] = nil
			err = w.write(w.now().Sub(w.start).Seconds(), code, p)
		}
	}
	if w.f != nil {
		if serr := w.f.Sync(); err == nil {
			err = serr
		}
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = w.err
	}
	w.err = errors.New("asciicast: writer closed")
	return err
}

// Reader reads a recording.
type Reader struct {
	Header Header // the recording's first line
	sc     *bufio.Scanner
	line   int
}

// NewReader reads the header from r.
func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{sc: bufio.NewScanner(r)}
	rd.sc.Buffer(make([]byte, 64<<10), 16<<20)
	if !rd.sc.Scan() {
		if err := rd.sc.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("asciicast: empty file")
	}
	rd.line = 1
	if err := json.Unmarshal(rd.sc.Bytes(), &rd.Header); err != nil {
		return nil, fmt.Errorf("asciicast: line 1: header: %w", err)
	}
	if rd.Header.Version != 2 {
		return nil, fmt.Errorf("asciicast: line 1: version %d, want 2", rd.Header.Version)
	}
	return rd, nil
}

// Next returns the next event, or io.EOF at the end.
func (r *Reader) Next() (Event, error) {
	for r.sc.Scan() {
		r.line++
		if len(r.sc.Bytes()) == 0 {
			continue
		}
		var raw []json.RawMessage
		if err := json.Unmarshal(r.sc.Bytes(), &raw); err != nil || len(raw) != 3 {
			return Event{}, fmt.Errorf("asciicast: line %d: want [time, code, data]", r.line)
		}
		var ev Event
		if json.Unmarshal(raw[0], &ev.Time) != nil || json.Unmarshal(raw[1], &ev.Code) != nil || json.Unmarshal(raw[2], &ev.Data) != nil {
			return Event{}, fmt.Errorf("asciicast: line %d: want [number, string, string]", r.line)
		}
		return ev, nil
	}
	if err := r.sc.Err(); err != nil {
		return Event{}, err
	}
	return Event{}, io.EOF
}
