package main

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

// serve's memory: --memory-limit.
//
// A fixed soft limit does not suit this process. What it holds at rest
// grows with the number of peers (wireguard-go's per-peer queues and
// goroutines), and under load with what is in flight: packets inside the
// WireGuard device each hold one of its 64 KiB message buffers (the node
// lets a bounded number in), and packets queue for peers whose client has
// gone (TCP retransmits, waiting for a handshake that never comes). A
// limit below what is live makes the collector run without pause
// (measured: 2-5x the CPU per GiB moved). auto therefore moves the limit
// after every collection: what the runtime holds besides its heap, plus
// the heap the collection found live, plus autoMemoryHeadroom for new
// garbage (see autoMemoryLimit). Garbage is what fills RSS (an upload
// through x/crypto/ssh allocates a fresh buffer per SSH packet), so
// capping it bounds RSS without ever starving the process.

// autoMemoryHeadroom is how much garbage --memory-limit auto lets the heap
// gather between collections.
const autoMemoryHeadroom = 16 << 20

// checkMemoryLimit reports whether v is a valid --memory-limit.
func checkMemoryLimit(v string) error {
	if v == "off" || v == "auto" {
		return nil
	}
	if _, err := parseBytes(v); err != nil {
		return fmt.Errorf("--memory-limit %q: %w", v, err)
	}
	return nil
}

// setMemoryLimit applies a checked --memory-limit value, unless the
// GOMEMLIMIT variable is set. With a limit, buffers grown during a bulk
// transfer are given back soon after instead of held until the next
// natural collection.
func setMemoryLimit(v string) {
	if os.Getenv("GOMEMLIMIT") != "" || v == "off" {
		return
	}
	if v == "auto" {
		debug.FreeOSMemory() // the start-up's garbage goes back to the OS
		trackMemoryLimit(autoMemoryHeadroom)
		trimAfterBursts(trimEvery, trimBurst, trimQuiet, giveBackMemory)
		return
	}
	n, _ := parseBytes(v)
	debug.SetMemoryLimit(n)
}

// memoryTracking is the generation of the running trackMemoryLimit; a
// sentinel of an older generation stops. The mutex makes stop final: no
// sentinel sets the limit once stop has returned.
var memoryTracking struct {
	sync.Mutex
	gen int64
}

// trackMemoryLimit sets the soft memory limit to autoMemoryLimit(head) now
// and after every collection, until the returned stop is called.
func trackMemoryLimit(head int64) (stop func()) {
	memoryTracking.Lock()
	defer memoryTracking.Unlock()
	memoryTracking.gen++
	gen := memoryTracking.gen
	debug.SetMemoryLimit(autoMemoryLimit(head))
	armMemorySentinel(gen, head)
	return func() {
		memoryTracking.Lock()
		defer memoryTracking.Unlock()
		if memoryTracking.gen == gen {
			memoryTracking.gen++
		}
	}
}

// memorySentinel is garbage whose finalizer runs once per collection. (The
// pointer keeps it out of the tiny allocator, whose blocks may outlive it.)
type memorySentinel struct{ _ *int }

func armMemorySentinel(gen, head int64) {
	runtime.SetFinalizer(&memorySentinel{}, func(*memorySentinel) {
		memoryTracking.Lock()
		defer memoryTracking.Unlock()
		if memoryTracking.gen != gen {
			return
		}
		debug.SetMemoryLimit(autoMemoryLimit(head))
		armMemorySentinel(gen, head)
	})
}

// autoMemoryLimit is the limit auto sets after a collection: what the
// runtime holds besides free heap spans (its stacks and metadata, and the
// heap spans in use, fragmentation included), plus room for new garbage:
// head, or a quarter of the live heap when that is more (so a large heap
// does not collect ever more often), plus the margin the runtime keeps
// below a limit (3%, at least 1 MiB). (MemStats rather than
// runtime/metrics, whose init costs every sshmesh process, nc included,
// about 1 ms.)
func autoMemoryLimit(head int64) int64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	room := max(head, int64(m.HeapAlloc)/4)
	return int64(m.Sys-m.HeapIdle) + room + max(room*3/100, 1<<20)
}

// After a burst (a bulk transfer, a wave of logins) the heap the burst
// grew stays: nothing allocates, so no collection runs, and the pools of
// the data path (wireguard-go's message buffers, gVisor's views) keep
// what they hold until two collections have passed. auto therefore also
// gives memory back once a burst is over.
const (
	trimEvery = 500 * time.Millisecond // how often the heap is looked at
	trimBurst = 32 << 20               // allocated since the last trim, or heap grown since: a burst
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

// parseBytes parses sizes like "48MiB", "1GiB", "500000" (bytes).
func parseBytes(v string) (int64, error) {
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
