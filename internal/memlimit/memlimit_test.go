package memlimit

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"48MiB": 48 << 20, "1GiB": 1 << 30, "512KiB": 512 << 10, "1000": 1000, "10B": 10} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "48MB", "0"} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q): no error", in)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	for _, v := range []string{"auto", "off", "64MiB"} {
		if err := Check(v); err != nil {
			t.Errorf("Check(%q): %v", v, err)
		}
	}
	if err := Check("64MB"); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Errorf("Check(64MB) = %v; want an error naming the flag", err)
	}
	t.Setenv("GOMEMLIMIT", "") // when set, it wins over --memory-limit
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	Set("64MiB")
	if got := debug.SetMemoryLimit(-1); got != 64<<20 {
		t.Errorf("after 64MiB the limit is %d", got)
	}
}

func TestAutoGCPercent(t *testing.T) {
	const MiB = 1 << 20
	for _, tc := range []struct {
		name            string
		live, stacks    uint64
		percent         int
		want            int
		wantRoomAtLeast uint64
	}{
		// 40 MiB live under GOGC=100: room for 16 MiB, not 41.
		{"bulk", 40 * MiB, 1 * MiB, 100, 39, 16 * MiB},
		// The same heap seen under the percentage just set.
		{"steady", 40 * MiB, 1 * MiB, 39, 39, 16 * MiB},
		// A large heap: a quarter of it, so it does not collect ever more often.
		{"large", 400 * MiB, 1 * MiB, 100, 25, 100 * MiB},
		// A small heap keeps Go's default.
		{"small", 8 * MiB, 1 * MiB, 100, 100, 8 * MiB},
	} {
		next := tc.live + (tc.live+tc.stacks)*uint64(tc.percent)/100
		got := autoGCPercent(next, tc.stacks, tc.percent, 16*MiB)
		if got < tc.want-1 || got > tc.want+1 {
			t.Errorf("%s: autoGCPercent = %d; want %d", tc.name, got, tc.want)
		}
		if room := (tc.live + tc.stacks) * uint64(got) / 100; room+MiB < tc.wantRoomAtLeast {
			t.Errorf("%s: room for %d MiB of garbage; want at least %d", tc.name, room/MiB, tc.wantRoomAtLeast/MiB)
		}
	}
}

// TestGCPercentTracksLiveHeap: auto's percentage follows what each
// collection finds live: down when the heap holds more, up again when it
// is let go.
func TestGCPercentTracksLiveHeap(t *testing.T) {
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	const head = 16 << 20
	stop := trackGCPercent(head)
	defer stop()
	// percentAfterGC collects until the percentage satisfies ok.
	percentAfterGC := func(ok func(int) bool) int {
		t.Helper()
		var got int
		for range 100 {
			runtime.GC()
			runtime.Gosched()
			gcTracking.Lock()
			got = gcTracking.percent
			gcTracking.Unlock()
			if ok(got) {
				return got
			}
		}
		t.Fatalf("after 100 collections the percentage is %d", got)
		return 0
	}
	b := make([]byte, 256<<20)
	percentAfterGC(func(p int) bool { return p == 25 })
	runtime.KeepAlive(b)
	b = nil
	percentAfterGC(func(p int) bool { return p >= 50 })
	stop()
	debug.SetGCPercent(77)
	runtime.GC()
	runtime.GC()
	if got := debug.SetGCPercent(77); got != 77 {
		t.Errorf("after stop the percentage moved to %d", got)
	}
	debug.SetGCPercent(100)
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
	// 128 MiB in one allocation: a burst no look can see half of. (Made of
	// 1 MiB allocations, a loaded machine that paused the loop for a look
	// mid-burst made it two bursts, and two trims.)
	runtime.KeepAlive(make([]byte, 128<<20))
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

// TestHeadroomCeiling: a small heap (a server's few MiB live) may gather
// at most 8 MiB of garbage between collections under auto, the peak RSS
// of a bulk copy depends on it (see Headroom).
func TestHeadroomCeiling(t *testing.T) {
	const MiB = 1 << 20
	if Headroom > 8*MiB {
		t.Errorf("Headroom is %d MiB, over the 8 MiB ceiling", Headroom/MiB)
	}
	// 8 MiB live: room for Headroom of garbage, not Go's default 8 MiB+.
	const live, stacks = 8 * MiB, 1 * MiB
	p := autoGCPercent(live+(live+stacks), stacks, 100, Headroom)
	if room := (live + stacks) * uint64(p) / 100; room > Headroom+MiB {
		t.Errorf("8 MiB live: room for %d MiB of garbage, want at most %d", room/MiB, Headroom/MiB)
	}
}
