// Package memlimit is the --memory-limit knob that sshmesh's long-running
// servers share (`sshmesh serve`, `sshmesh-tailnet serve`): auto paces the
// garbage collector from the live heap and gives memory back after bursts;
// a size sets a soft limit; off leaves the runtime alone.
package memlimit

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A server's memory: --memory-limit.
//
// A fixed soft limit does not suit this process. What it holds at rest
// grows with the number of peers (wireguard-go's per-peer queues and
// goroutines), and under load with what is in flight: packets inside the
// WireGuard device each hold one of its 64 KiB message buffers (the node
// lets a bounded number in), and packets queue for peers whose client has
// gone (TCP retransmits, waiting for a handshake that never comes). A
// limit below what is live makes the collector run without pause
// (measured: 2-5x the CPU per GiB moved). Go's default, on the other
// hand, lets garbage grow to the size of the live heap: an upload through
// x/crypto/ssh allocates a fresh buffer per SSH packet, so a server with
// 500 peers (34 MiB live under bulk) reached 85 MiB of RSS.
//
// auto therefore sets the garbage collector's percentage (GOGC) after
// every collection, from what that collection found live, so that the
// next one comes after Headroom of new garbage, or a quarter of
// the live heap when that is more (so a large heap does not collect ever
// more often): never less than 25, never more than Go's default of 100.
// The collector never runs without pause, and garbage, which is what
// fills RSS, stays bounded. (A soft memory limit moved after every
// collection, tried first, did not bind: read then, the heap in use
// still holds the garbage not yet swept.)

// Headroom is how much garbage --memory-limit auto lets the heap gather
// between collections (more when a quarter of the live heap is more).
// A bulk copy through a 501-peer server (bench/mem, 512 MiB each way, a
// live heap of 7-13 MiB) peaked at 53 MiB of RSS with 16 MiB of headroom,
// 46 with 8 and 41 with 4; its collections took 0.7, 0.9 and 2.4 s of CPU
// per GiB moved (of about 30). 8 MiB it is.
const Headroom = 8 << 20

// Check reports whether v is a valid --memory-limit: auto, off, or a size
// such as 64MiB. Its error names the flag.
func Check(v string) error {
	if v == "off" || v == "auto" {
		return nil
	}
	if _, err := ParseBytes(v); err != nil {
		return fmt.Errorf("--memory-limit %q: %w", v, err)
	}
	return nil
}

// Set applies a checked --memory-limit value, unless the
// GOMEMLIMIT variable is set (auto: unless GOGC or GOMEMLIMIT is set).
// stop ends auto's tracking; a fixed limit stays.
func Set(v string) (stop func()) {
	if os.Getenv("GOMEMLIMIT") != "" || v == "off" {
		return func() {}
	}
	if v == "auto" {
		if os.Getenv("GOGC") != "" {
			return func() {}
		}
		debug.FreeOSMemory() // the start-up's garbage goes back to the OS
		stopGC := trackGCPercent(Headroom)
		stopTrim := trimAfterBursts(trimEvery, trimBurst, trimQuiet, giveBackMemory)
		return func() { stopTrim(); stopGC() }
	}
	n, _ := ParseBytes(v)
	debug.SetMemoryLimit(n)
	return func() {}
}

// gcTracking is the generation of the running trackGCPercent; a sentinel
// of an older generation stops. The mutex makes stop final: no sentinel
// sets the percentage once stop has returned.
var gcTracking struct {
	sync.Mutex
	gen     int64
	percent int // the percentage in force
}

// trackGCPercent sets GOGC to autoGCPercent after every collection, until
// the returned stop is called; stop restores the percentage there was.
func trackGCPercent(head uint64) (stop func()) {
	gcTracking.Lock()
	defer gcTracking.Unlock()
	gcTracking.gen++
	gen := gcTracking.gen
	old := debug.SetGCPercent(100)
	gcTracking.percent = 100
	armGCSentinel(gen, head)
	return func() {
		gcTracking.Lock()
		defer gcTracking.Unlock()
		if gcTracking.gen == gen {
			gcTracking.gen++
			debug.SetGCPercent(old)
		}
	}
}

// gcSentinel is garbage whose finalizer runs once per collection. (The
// pointer keeps it out of the tiny allocator, whose blocks may outlive it.)
type gcSentinel struct{ _ *int }

func armGCSentinel(gen int64, head uint64) {
	runtime.SetFinalizer(&gcSentinel{}, func(*gcSentinel) {
		gcTracking.Lock()
		defer gcTracking.Unlock()
		if gcTracking.gen != gen {
			return
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		if p := autoGCPercent(m.NextGC, m.StackInuse, gcTracking.percent, head); p != gcTracking.percent {
			debug.SetGCPercent(p)
			gcTracking.percent = p
		}
		armGCSentinel(gen, head)
	})
}

// autoGCPercent is the percentage for the next cycle. Go's pacer set the
// goal of the cycle under way, nextGC, from the heap the last collection
// marked live and percent: goal = live + (live + stacks) * percent/100
// (globals are in that sum too, and small here). Solved for live, the new
// percentage gives the next cycle room for max(head, live/4) of garbage.
// (MemStats rather than runtime/metrics, whose init costs every sshmesh
// process, nc included, about 1 ms.)
func autoGCPercent(nextGC, stacks uint64, percent int, head uint64) int {
	g := float64(percent) / 100
	live := (float64(nextGC) - float64(stacks)*g) / (1 + g)
	if live <= 0 {
		return 100
	}
	room := max(float64(head), live/4)
	return min(100, max(25, int(100*room/(live+float64(stacks)))))
}

// After a burst (a bulk transfer, a wave of logins) the heap the burst
// grew stays: nothing allocates, so no collection runs, and the pools of
// the data path (wireguard-go's message buffers, gVisor's views) keep
// what they hold until two collections have passed. auto therefore also
// gives memory back once a burst is over.
const (
	trimEvery = 500 * time.Millisecond // how often the heap is looked at
	trimBurst = 4 << 20                // allocated since the last trim, or heap grown since: a burst (a few logins are one)
	trimQuiet = 1 << 20                // allocated in one look: quiet
)

// trimAfterBursts calls trim, looking every interval, when less than quiet
// bytes were allocated in the last interval after a burst: burst bytes
// allocated since the last trim, or the heap's spans in use grown by
// burst/4 since (pools fill without much allocation). It runs until stop
// is called.
func trimAfterBursts(every time.Duration, burst, quiet uint64, trim func()) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		last, since, base := m.TotalAlloc, uint64(0), m.HeapInuse
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			runtime.ReadMemStats(&m)
			d := m.TotalAlloc - last
			last = m.TotalAlloc
			since += d
			if d < quiet && (since >= burst || m.HeapInuse >= base+burst/4) {
				trim()
				runtime.ReadMemStats(&m)
				last, since, base = m.TotalAlloc, 0, m.HeapInuse
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// giveBackMemory collects twice (pooled buffers survive one collection)
// and returns the free memory to the OS.
func giveBackMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// ParseBytes parses sizes like "48MiB", "1GiB", "500000" (bytes).
func ParseBytes(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if !strings.HasSuffix(v, u.suffix) {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(v, u.suffix), 10, 64)
		if err != nil || n <= 0 {
			return 0, errors.New("want auto, off, or a size such as 64MiB")
		}
		return n * u.mult, nil
	}
	return 0, errors.New("want auto, off, or a size such as 64MiB")
}

// Usage is the --memory-limit flag's help text; its default is "auto".
var Usage = "memory `limit` for the Go runtime: auto (after every collection, the next is paced to come after " + strconv.Itoa(Headroom>>20) + "MiB of new garbage or a quarter of the live heap, whichever is more, and memory goes back to the OS once a burst is over), a size such as 64MiB (a soft limit), or off; the GOMEMLIMIT variable, and GOGC for auto, win when set"
