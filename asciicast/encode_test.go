package asciicast_test

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/asciicast"
)

// marshalEvent is the event line as encoding/json writes it.
func marshalEvent(t float64, code string, data []byte) []byte {
	b, err := json.Marshal([]any{json.Number(strconv.FormatFloat(t, 'f', 6, 64)), code, string(data)})
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// oddInputs are the data that JSON escaping gets wrong most easily.
var oddInputs = []string{
	"", "plain text\r\n", "\x00\x01\x07\b\t\n\v\f\r\x1b[31m\x1f\x7f", `"quoted" \back\slash/`,
	"<script>&amp;</script>", "\u2028\u2029", "héllo €uro 𝄞", "\xff\xfe", "\xe2\x82", "\xe2\x82\xac\xe2",
	"\xed\xa0\x80 (surrogate)", "\xc0\xaf (overlong)", "\xf4\x90\x80\x80 (over U+10FFFF)", "\uFFFD real replacement",
	"a\xe2\u2028\xe2\x80", "\U0010FFFF",
}

func TestAppendEventMatchesEncodingJSON(t *testing.T) {
	for _, in := range oddInputs {
		for _, tm := range []float64{0, 0.5, 1234.0000004, 1e9 + 0.123456} {
			for _, code := range []string{asciicast.Output, asciicast.Input, asciicast.Resize} {
				want := marshalEvent(tm, code, []byte(in))
				if got := asciicast.AppendEvent(nil, tm, code, []byte(in)); !bytes.Equal(got, want) {
					t.Errorf("%q:\n got %s\nwant %s", in, got, want)
				}
			}
		}
	}
	// Random bytes, biased to the interesting ones, in pieces cut anywhere.
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("a<>&\"\\\x00\x1f\x7f\n\xe2\x80\xa8\xa9\xc3\xa9\xf0\x9f\x98\x80\xff\xed\xa0")
	buf := []byte("prefix ")
	for range 20000 {
		data := make([]byte, rng.IntN(40))
		for i := range data {
			if rng.IntN(4) == 0 {
				data[i] = byte(rng.IntN(256))
			} else {
				data[i] = alphabet[rng.IntN(len(alphabet))]
			}
		}
		want := marshalEvent(1.5, asciicast.Output, data)
		got := asciicast.AppendEvent(buf[:7], 1.5, asciicast.Output, data)
		if !bytes.Equal(got[7:], want) || string(got[:7]) != "prefix " {
			t.Fatalf("%q:\n got %s\nwant %s", data, got[7:], want)
		}
		buf = got
	}
}

// TestEveryByteAtEveryOffset: each byte value, alone in plain text at each
// offset of an 8-byte word (where the encoder tests eight bytes at once),
// is escaped as encoding/json escapes it.
func TestEveryByteAtEveryOffset(t *testing.T) {
	for _, background := range []byte{'a', ' ', '~', 0x7f, '!', '=', '?', '[', ']'} {
		for c := range 256 {
			for at := range 17 {
				data := bytes.Repeat([]byte{background}, 24)
				data[at] = byte(c)
				want := marshalEvent(1, asciicast.Output, data)
				if got := asciicast.AppendEvent(nil, 1, asciicast.Output, data); !bytes.Equal(got, want) {
					t.Fatalf("byte %#x at %d in %q:\n got %s\nwant %s", c, at, background, got, want)
				}
			}
		}
	}
}

func FuzzAppendEvent(f *testing.F) {
	for _, in := range oddInputs {
		f.Add([]byte(in), 1.25)
	}
	f.Fuzz(func(t *testing.T, data []byte, tm float64) {
		if tm < 0 || tm > 1e12 || tm != tm {
			return
		}
		if got, want := asciicast.AppendEvent(nil, tm, asciicast.Output, data), marshalEvent(tm, asciicast.Output, data); !bytes.Equal(got, want) {
			t.Fatalf("%q:\n got %s\nwant %s", data, got, want)
		}
	})
}

func BenchmarkAppendEvent(b *testing.B) {
	data := bytes.Repeat([]byte("8388608 line 000042: the quick brown fox jumps over the lazy dog\n"), 512)
	b.Run("AppendEvent", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		var buf []byte
		for b.Loop() {
			buf = asciicast.AppendEvent(buf[:0], 1.5, asciicast.Output, data)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			marshalEvent(1.5, asciicast.Output, data)
		}
	})
}

// TestLongWriteIsSeveralEvents: a write longer than MaxEventData is cut
// between characters into events of at most MaxEventData bytes, which
// together hold the write unchanged.
func TestLongWriteIsSeveralEvents(t *testing.T) {
	data := bytes.Repeat([]byte("ab€𝄞\u2028"), asciicast.MaxEventData/4)
	var buf bytes.Buffer
	w := asciicast.NewEventWriter(&buf, time.Now(), nil)
	if err := w.Output(data); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r, err := asciicast.NewReader(io.MultiReader(strings.NewReader("{\"version\": 2}\n"), &buf))
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	events := 0
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(ev.Data) > asciicast.MaxEventData {
			t.Errorf("an event of %d bytes", len(ev.Data))
		}
		events++
		got = append(got, ev.Data...)
	}
	if !bytes.Equal(got, data) || events < 2 {
		t.Errorf("%d events holding %d bytes, want the %d bytes written in several", events, len(got), len(data))
	}
}

// TestLongWriteKeepsACharacterBeforeStrayBytes: a four-byte character that
// ends right at the cut, followed by a stray continuation byte, is not
// split (the recording would show four U+FFFD where the client saw it).
func TestLongWriteKeepsACharacterBeforeStrayBytes(t *testing.T) {
	data := append(bytes.Repeat([]byte("a"), asciicast.MaxEventData-4), "😀\x80tail"...)
	var buf bytes.Buffer
	w := asciicast.NewEventWriter(&buf, time.Now(), nil)
	if err := w.Output(data); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r, err := asciicast.NewReader(io.MultiReader(strings.NewReader("{\"version\": 2}\n"), &buf))
	if err != nil {
		t.Fatal(err)
	}
	var first asciicast.Event
	if first, err = r.Next(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(first.Data, "😀") {
		t.Errorf("the first event ends with %q, want the whole 😀", first.Data[len(first.Data)-8:])
	}
}

// lineBuffer is a LineAppender that keeps what is appended.
type lineBuffer struct{ buf []byte }

func (l *lineBuffer) AppendLine(line func([]byte) []byte) error { l.buf = line(l.buf); return nil }
func (l *lineBuffer) Write(p []byte) (int, error)               { panic("a LineAppender is not written to") }

// TestLineAppenderGetsTheSameLines: a Writer whose output is a
// LineAppender appends to it the lines it would write to an io.Writer.
func TestLineAppenderGetsTheSameLines(t *testing.T) {
	clock := func() time.Time { return time.Unix(100, 0) }
	var plain bytes.Buffer
	var lines lineBuffer
	for _, w := range []*asciicast.Writer{asciicast.NewEventWriter(&plain, time.Unix(99, 0), clock), asciicast.NewEventWriter(&lines, time.Unix(99, 0), clock)} {
		w.Output([]byte("hello \xe2\x82"))
		w.Output(append([]byte("\xac <world>\n"), bytes.Repeat([]byte("x"), asciicast.MaxEventData)...))
		w.Resize(100, 30)
		w.Input([]byte("q"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(lines.buf, plain.Bytes()) || plain.Len() < asciicast.MaxEventData {
		t.Errorf("appended lines differ from written ones:\n%.300s\n%.300s", lines.buf, plain.Bytes())
	}
}
