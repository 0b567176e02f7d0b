package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"48MiB": 48 << 20, "1GiB": 1 << 30, "512KiB": 512 << 10, "1000": 1000, "10B": 10} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "48MB", "0"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q): no error", in)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	for _, v := range []string{"auto", "off", "64MiB"} {
		if err := checkMemoryLimit(v); err != nil {
			t.Errorf("checkMemoryLimit(%q): %v", v, err)
		}
	}
	if err := checkMemoryLimit("64MB"); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Errorf("checkMemoryLimit(64MB) = %v; want an error naming the flag", err)
	}
	t.Setenv("GOMEMLIMIT", "") // when set, it wins over --memory-limit
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	setMemoryLimit("64MiB")
	if got := debug.SetMemoryLimit(-1); got != 64<<20 {
		t.Errorf("after 64MiB the limit is %d", got)
	}
}

// TestMemoryLimitTracksLiveHeap: auto's limit follows what each collection
// finds live, up when the heap holds more and down when it is let go.
func TestMemoryLimitTracksLiveHeap(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "") // when set, it wins over --memory-limit
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	const head = 32 << 20
	stop := trackMemoryLimit(head)
	defer stop()
	// limitAfterGC collects until the limit moved past the threshold in
	// the direction wanted (other tests allocate beside this one).
	limitAfterGC := func(ok func(int64) bool) int64 {
		t.Helper()
		var got int64
		for range 100 {
			runtime.GC()
			runtime.Gosched()
			if got = debug.SetMemoryLimit(-1); ok(got) {
				return got
			}
		}
		t.Fatalf("after 100 collections the limit is %d MiB", got>>20)
		return 0
	}
	base := autoMemoryLimit(head)
	const ballast = 256 << 20
	b := make([]byte, ballast)
	grown := limitAfterGC(func(l int64) bool { return l >= base+ballast/2 })
	runtime.KeepAlive(b)
	b = nil
	limitAfterGC(func(l int64) bool { return l <= grown-ballast/2 })
	stop()
	debug.SetMemoryLimit(123 << 20)
	runtime.GC()
	runtime.GC()
	if got := debug.SetMemoryLimit(-1); got != 123<<20 {
		t.Errorf("after stop the limit moved to %d MiB", got>>20)
	}
}

// TestTrimAfterBursts: memory is given back once after a burst of
// allocation has gone quiet, and not while nothing happened.
func TestTrimAfterBursts(t *testing.T) {
	trims := make(chan struct{}, 10)
	stop := trimAfterBursts(20*time.Millisecond, 64<<20, 1<<20, func() { trims <- struct{}{} })
	defer stop()
	select {
	case <-trims:
		t.Fatal("trimmed without a burst")
	case <-time.After(200 * time.Millisecond):
	}
	var sink [][]byte
	for range 128 {
		sink = append(sink, make([]byte, 1<<20)) // 128 MiB: a burst
	}
	runtime.KeepAlive(sink)
	sink = nil
	select {
	case <-trims:
	case <-time.After(10 * time.Second):
		t.Fatal("no trim within 10s of a burst")
	}
	select {
	case <-trims:
		t.Fatal("trimmed twice after one burst")
	case <-time.After(200 * time.Millisecond):
	}
}
