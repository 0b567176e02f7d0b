//go:build unix

package policy

import (
	"syscall"
	"testing"
	"time"
)

// cpuClock is the CPU time the process has used (user and system, every
// thread, the garbage collector's too): on a shared machine it moves less
// with the load than wall time does.
type cpuClock time.Duration

func cpuNow() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuClock { return cpuClock(cpuNow()) }

// report adds the CPU time per op since c to b's results, as cpu-ms/op.
func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(cpuNow()-time.Duration(c))/float64(b.N)/1e6, "cpu-ms/op")
}
