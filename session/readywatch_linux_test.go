package session

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestWhenReadable: a watch's function runs once its descriptor is
// readable, and once only; a hang-up counts as readable.
func TestWhenReadable(t *testing.T) {
	r, w := pipe(t)
	fired, cancel := watchFired(t, r)
	select {
	case <-fired:
		t.Fatal("the watch fired on an empty pipe")
	default:
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitFired(t, fired, "after a write")
	if cancel() {
		t.Error("cancel after the watch fired: true, want false")
	}
	// Still readable, and written again: a one-shot watch does not fire twice.
	if _, err := w.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	r2, w2 := pipe(t)
	fired2, _ := watchFired(t, r2)
	w2.Close() // hang-up
	waitFired(t, fired2, "after the write end closed")
	select {
	case <-fired:
		t.Error("the first watch fired a second time")
	default:
	}
}

// TestWhenReadableCancel: a cancelled watch never fires, and the watcher's
// goroutine ends when nothing is watched.
func TestWhenReadableCancel(t *testing.T) {
	r, w := pipe(t)
	fired, cancel := watchFired(t, r)
	if !cancel() {
		t.Fatal("cancel of an armed watch: false, want true")
	}
	if cancel() {
		t.Error("second cancel: true, want false")
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// A watch armed after the write fires; the cancelled one must not
	// have by then (the watcher reports events in one pass).
	r2, w2 := pipe(t)
	if _, err := w2.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	fired2, _ := watchFired(t, r2)
	waitFired(t, fired2, "on a pipe holding data")
	select {
	case <-fired:
		t.Error("a cancelled watch fired")
	default:
	}
	// The goroutine waits while a watch is armed; cancelling the last
	// one ends it.
	r3, _ := pipe(t)
	_, cancel3 := watchFired(t, r3)
	if watcherGoroutines() == 0 {
		t.Error("no watcher goroutine while a watch is armed")
	}
	cancel3()
	if n := watcherGoroutinesUntilNone(); n != 0 {
		t.Errorf("%d watcher goroutines with nothing watched, want 0", n)
	}
}

// watchFired arms a watch on r; each time it fires, the channel gets a value.
func watchFired(t *testing.T, r *os.File) (fired <-chan struct{}, cancel func() bool) {
	t.Helper()
	ch := make(chan struct{}, 2)
	cancel, err := whenReadable(int(r.Fd()), func() { ch <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	return ch, cancel
}

func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func waitFired(t *testing.T, fired <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-fired:
	case <-time.After(20 * time.Second):
		t.Fatalf("the watch did not fire within 20 s %s", what)
	}
}

// watcherGoroutinesUntilNone counts the watcher's goroutines until there
// are none, for up to 20 s (it ends on its next wake-up), and returns the
// last count.
func watcherGoroutinesUntilNone() int {
	n := watcherGoroutines()
	for deadline := time.Now().Add(20 * time.Second); n != 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		n = watcherGoroutines()
	}
	return n
}

// watcherGoroutines counts the watcher's goroutines: those in its run, and
// those whenReadable started that have not run yet (their stack shows
// the go statement's wrapper).
func watcherGoroutines() int {
	return goroutinesIn("session.(*readyWatcher).run", "created by github.com/sshmesh/sshmesh/session.whenReadable ")
}

// goroutinesIn counts the goroutines with any of fns (a function name's
// prefix, package-qualified) on their stack.
func goroutinesIn(fns ...string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		for _, fn := range fns {
			if strings.Contains(string(g), fn) {
				n++
				break
			}
		}
	}
	return n
}

// refuseWatches makes whenReadable fail until the test ends: sessions then
// wait as they do without a watcher.
func refuseWatches(t *testing.T) {
	watcher.mu.Lock()
	watchRefused = errors.New("refused by the test")
	watcher.mu.Unlock()
	t.Cleanup(func() {
		watcher.mu.Lock()
		watchRefused = nil
		watcher.mu.Unlock()
	})
}
