package recorder

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

func TestCheckEvents(t *testing.T) {
	for _, c := range []struct {
		in   string
		ok   bool
		last float64
	}{
		{"[0.100000,\"o\",\"hi\"]\n", true, 0.1},
		{"[0.1,\"o\",\"a\"]\n[2.5,\"r\",\"80x24\"]\n[3,\"i\",\"\\u001b[A\\\"]\"]\n", true, 3},
		{"[0.1,\"o\",\"hi\"]", false, 0},           // not a whole line
		{"[0.1,\"x\",\"hi\"]\n", false, 0},         // bad code
		{"[-1,\"o\",\"hi\"]\n", false, 0},          // negative time
		{"[0.1,\"o\",\"hi\"],\"x\"]\n", false, 0},  // trailing junk inside
		{"[0.1,\"o\",\"unterminated]\n", false, 0}, // bad string
		{"[0.1,\"o\",42]\n", false, 0},             // data not a string
		{"{\"version\":2}\n", false, 0},            // a header
		{"[NaN,\"o\",\"x\"]\n", false, 0},          // not a number
		{"[0.1,\"o\",\"a\"]\n\n", false, 0},        // empty line
		{"[1e3,\"o\",\"a\"]\n", true, 1000},        // JSON allows an exponent
		{"[+1,\"o\",\"a\"]\n", false, 0},           // ParseFloat takes these; JSON does not
		{"[.5,\"o\",\"a\"]\n", false, 0},
		{"[1.,\"o\",\"a\"]\n", false, 0},
		{"[0x1p3,\"o\",\"a\"]\n", false, 0},
		{"[00012,\"o\",\"a\"]\n", false, 0},
		{"[1_0,\"o\",\"a\"]\n", false, 0},
		{"[Inf,\"o\",\"a\"]\n", false, 0},
	} {
		last, err := checkEvents([]byte(c.in))
		if (err == nil) != c.ok || c.ok && last != c.last {
			t.Errorf("checkEvents(%q) = %v, %v; want ok %v, last %v", c.in, last, err, c.ok, c.last)
		}
	}
}

// FuzzValidNumber: the recorder's check of an event's time agrees with
// json.Valid on every input that does not start with a sign or white space.
func FuzzValidNumber(f *testing.F) {
	for _, s := range []string{"0", "0.100000", "12.5e-3", "1E+2", "+1", ".5", "1.", "0x1p3", "00012", "1_0", "01", "0.", "1e", "Inf"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) > 0 && bytes.ContainsRune([]byte(" \t\r\n-"), rune(p[0])) || len(p) > 0 && bytes.ContainsRune([]byte(" \t\r\n"), rune(p[len(p)-1])) {
			return
		}
		want := json.Valid(p) && len(p) > 0 && '0' <= p[0] && p[0] <= '9'
		if got := validNumber(p); got != want {
			t.Fatalf("validNumber(%q) = %v, json.Valid says %v", p, got, want)
		}
	})
}

// FuzzValidString: the recorder's check of an event's data agrees with
// json.Valid on every input that starts and ends without white space.
func FuzzValidString(f *testing.F) {
	for _, s := range []string{`""`, `"a"`, `"\u00e9\"\\\/\b\f\n\r\t"`, `"\u12"`, `"\x"`, "\"\x01\"", "\"\xff\xfe\"", `"a"b"`, `"\"`, `"`, `"\u2028"`, `"\uD800"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) > 0 && (bytes.ContainsRune([]byte(" \t\r\n"), rune(p[0])) || bytes.ContainsRune([]byte(" \t\r\n"), rune(p[len(p)-1]))) {
			return
		}
		want := json.Valid(p) && len(p) > 0 && p[0] == '"'
		if got := validString(p); got != want {
			t.Fatalf("validString(%q) = %v, json.Valid says %v", p, got, want)
		}
	})
}

// TestPayloadMemoryFollowsItsBytes: a frame that claims MaxFrame bytes and
// sends ten costs the reader no more than a first step of memory.
func TestPayloadMemoryFollowsItsBytes(t *testing.T) {
	const frames = 64
	in := append([]byte{frameData, 0, 0x10, 0, 0}, "ten bytes."...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range frames {
		if _, _, err := readFrame(bytes.NewReader(in), MaxFrame); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("a frame cut short: %v, want io.ErrUnexpectedEOF", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / frames; per > MaxFrame/8 { // payloadFirst, and the race detector's own
		t.Errorf("%d bytes allocated per frame that sent 10 of the %d it claimed", per, MaxFrame)
	}
	// A whole frame still reads whole.
	want := bytes.Repeat([]byte("0123456789abcdef"), MaxFrame/16)
	var frame bytes.Buffer
	writeFrame(&frame, frameData, want)
	if typ, p, err := readFrame(iotest.OneByteReader(&frame), MaxFrame); err != nil || typ != frameData || !bytes.Equal(p, want) {
		t.Errorf("a whole frame read byte by byte: %q, %d bytes, %v", typ, len(p), err)
	}
}
