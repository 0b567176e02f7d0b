package session

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"
)

// These tests hold the session copies to their memory contract: a copy
// that waits for data holds none of the large buffers (copyBufferSize).

// waitBuffersBack waits, up to a generous bound, until no copy holds a
// large buffer, and fails the test if one still does.
func waitBuffersBack(t *testing.T, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for copyBuffersOut.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d large copy buffers still held", what, copyBuffersOut.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// notifyWriter collects what is written and signals every write.
type notifyWriter struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.b.Write(p)
	w.mu.Unlock()
	select {
	case w.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *notifyWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.b.Bytes())
}

func TestCopyFromFileHoldsNoBufferWhileWaiting(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	w := &notifyWriter{wrote: make(chan struct{}, 1)}
	done := make(chan error, 1)
	go func() { _, err := copyFromFile(w, pr, nil); done <- err }()

	waitBuffersBack(t, "before any data")
	want := make([]byte, 3*copyBufferSize+100) // more than a buffer: several reads
	rand.Read(want)
	if _, err := pw.Write(want); err != nil {
		t.Fatal(err)
	}
	for !bytes.Equal(w.bytes(), want) {
		select {
		case <-w.wrote:
		case err := <-done:
			t.Fatalf("copy ended early: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("copied %d of %d bytes", len(w.bytes()), len(want))
		}
	}
	// The copy now waits for more, and holds no buffer while it does.
	waitBuffersBack(t, "after a burst")
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("copy at EOF: %v, want nil", err)
	}
	if !bytes.Equal(w.bytes(), want) {
		t.Fatal("copied bytes differ")
	}
}

func TestCopyFromFileEndsAtItsDeadline(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	_ = pr.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = copyFromFile(io.Discard, pr, nil)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("copy past the read deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	waitBuffersBack(t, "after the deadline")
}

func TestCopyFromFileStopsOnAFailedWrite(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if _, err := pw.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	gone := errors.New("client gone")
	_, err = copyFromFile(failingWriter{gone}, pr, nil)
	if !errors.Is(err, gone) {
		t.Fatalf("copy to a failing writer: %v, want %v", err, gone)
	}
	waitBuffersBack(t, "after a failed write")
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

// chunkReader hands out its chunks one per Read (a chunk larger than the
// buffer given is split) and then blocks in Read until released, like an
// SSH channel whose client sends nothing more; then it returns io.EOF.
type chunkReader struct {
	mu      sync.Mutex
	chunks  [][]byte
	waiting chan struct{} // closed when Read blocks with nothing left
	release chan struct{}
	maxBuf  int // the largest buffer Read was given
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	r.maxBuf = max(r.maxBuf, len(p))
	if len(r.chunks) > 0 {
		n := copy(p, r.chunks[0])
		r.chunks[0] = r.chunks[0][n:]
		if len(r.chunks[0]) == 0 {
			r.chunks = r.chunks[1:]
		}
		r.mu.Unlock()
		return n, nil
	}
	r.mu.Unlock()
	close(r.waiting)
	<-r.release
	return 0, io.EOF
}

func TestCopyToFileHoldsNoBufferWhileWaiting(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	want := make([]byte, 200_000)
	rand.Read(want)
	// A bulk part (large reads), a short read, then keystroke-sized ones.
	r := &chunkReader{
		chunks:  [][]byte{want[:150_000], want[150_000:150_100], want[150_100:150_101], want[150_101:]},
		waiting: make(chan struct{}),
		release: make(chan struct{}),
	}
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(pr); got <- b }()
	done := make(chan error, 1)
	go func() { _, err := copyToFile(pw, r); pw.Close(); done <- err }()

	select {
	case <-r.waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("the copy never drained the reader")
	}
	// It now waits in Read with the small buffer only.
	waitBuffersBack(t, "while the reader has nothing")
	close(r.release)
	if err := <-done; err != nil {
		t.Fatalf("copy at EOF: %v, want nil", err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the file got %d bytes, differing from the %d sent", len(b), len(want))
	}
	if r.maxBuf != bulkCopyBuffer {
		t.Errorf("largest read %d bytes, want %d during the bulk part", r.maxBuf, bulkCopyBuffer)
	}
}
