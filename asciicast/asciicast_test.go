package asciicast_test

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sshmesh/sshmesh/asciicast"
)

func TestRoundTrip(t *testing.T) {
	now := time.Unix(1700000000, 0)
	clock := func() time.Time { return now }
	var buf bytes.Buffer
	w, err := asciicast.NewWriter(&buf, asciicast.Header{Width: 80, Height: 24, Env: map[string]string{"TERM": "xterm"}}, clock)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(500 * time.Millisecond)
	w.Output([]byte("héllo\r\n"))
	w.Output([]byte{0xe2, 0x82}) // first two bytes of "€"
	now = now.Add(time.Second)
	w.Output([]byte{0xac, '!'})
	w.Resize(100, 30)
	w.Input([]byte("ls\r"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := asciicast.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(asciicast.Header{Version: 2, Width: 80, Height: 24, Timestamp: 1700000000, Env: map[string]string{"TERM": "xterm"}}, r.Header); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	var got []asciicast.Event
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	want := []asciicast.Event{{0.5, "o", "héllo\r\n"}, {1.5, "o", "€!"}, {1.5, "r", "100x30"}, {1.5, "i", "ls\r"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestCreateMode(t *testing.T) {
	path := t.TempDir() + "/x.cast"
	w, err := asciicast.Create(path, asciicast.Header{Width: 1, Height: 1})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode())
	}
	if _, err := asciicast.Create(path, asciicast.Header{}); err == nil {
		t.Error("Create overwrote an existing recording")
	}
}

func TestReaderErrors(t *testing.T) {
	for _, in := range []string{"", "{\"version\": 1}\n", "{\"version\": 2}\n[1, \"o\"]\n", "{\"version\": 2}\n[\"x\", \"o\", \"a\"]\n"} {
		r, err := asciicast.NewReader(bytes.NewBufferString(in))
		if err == nil {
			_, err = r.Next()
		}
		if err == nil || err == io.EOF {
			t.Errorf("%q: no error", in)
		}
	}
}
