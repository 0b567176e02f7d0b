package session

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"testing/iotest"

	"golang.org/x/sys/unix"
)

func pipeSize(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ferr error
	if err := rc.Control(func(fd uintptr) { n, ferr = unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0) }); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	return n
}

// A bulk stream (reads that fill the buffer) goes through whole, and its
// pipe is grown; the bytes arrive in order.
func TestCopyGrowingBulk(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	before := pipeSize(t, w)
	data := make([]byte, 3<<20+123)
	for i := range data {
		data[i] = byte(i * 7)
	}
	got := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); got <- b }()
	n, err := copyTo(w, bytes.NewReader(data), w)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("copyTo = %d, %v; want %d, nil", n, err, len(data))
	}
	after := pipeSize(t, w)
	w.Close()
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("the reader got %d bytes, not the %d written (or not in order)", len(b), len(data))
	}
	if after < bulkPipeSize || after <= before {
		t.Errorf("pipe size %d before, %d after a bulk copy; want it grown to %d", before, after, bulkPipeSize)
	}
}

// An interactive stream (short reads) keeps the kernel's default pipe.
func TestCopyGrowingInteractive(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	before := pipeSize(t, w)
	data := bytes.Repeat([]byte("ls -l\n"), 1000)
	got := make(chan []byte)
	go func() { b := make([]byte, len(data)); _, err := io.ReadFull(r, b); _ = err; got <- b }()
	// OneByteReader: every read returns one byte, as keystrokes come.
	if n, err := copyTo(w, iotest.OneByteReader(bytes.NewReader(data)), w); err != nil || n != int64(len(data)) {
		t.Fatalf("copyTo = %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatal("the reader did not get the bytes written")
	}
	if after := pipeSize(t, w); after != before {
		t.Errorf("pipe size %d before, %d after short reads; want it unchanged", before, after)
	}
}

// Errors end the copy with what was written so far: the writer's, and the
// reader's other than EOF.
func TestCopyGrowingErrors(t *testing.T) {
	_, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	boom := errors.New("boom")
	if n, err := copyTo(failWriter{boom}, bytes.NewReader(make([]byte, 10)), w); !errors.Is(err, boom) || n != 0 {
		t.Errorf("writer error: got %d, %v; want 0, boom", n, err)
	}
	src := io.MultiReader(bytes.NewReader([]byte("abc")), iotest.ErrReader(boom))
	var dst bytes.Buffer
	if n, err := copyTo(&dst, src, w); !errors.Is(err, boom) || n != 3 || dst.String() != "abc" {
		t.Errorf("reader error: got %d, %v, %q; want 3, boom, abc", n, err, dst.String())
	}
	if n, err := copyTo(shortWriter{}, bytes.NewReader(make([]byte, 10)), w); !errors.Is(err, io.ErrShortWrite) || n != 5 {
		t.Errorf("short write: got %d, %v; want 5, io.ErrShortWrite", n, err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }
