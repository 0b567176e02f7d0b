//go:build unix

package main

import (
	"io"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkReloadRuleScale is what a SIGHUP reload does when only one
// rule of the policy changed (policy.hujson and policy-rule.hujson of
// bench/scalegen in turn, in $SSHMESH_SCALE_DIR; skipped without it), for
// profiling with -cpuprofile: the nodes of the policy are not compiled
// again (policy.Document.Reparse).
func BenchmarkReloadRuleScale(b *testing.B) {
	dir := scaleDir(b)
	conf := filepath.Join(dir, "server.conf")
	policies := []string{filepath.Join(dir, "policy-rule.hujson"), filepath.Join(dir, "policy.hujson")}
	rl := startTestReload(b, conf, policies[1], slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.ReportAllocs()
	cpu0 := cpuTime()
	for i := 0; b.Loop(); i++ {
		rl.policyPath = policies[i%2]
		if !rl.reload() {
			b.Fatal("reload failed")
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
}

// cpuTime is the CPU time the process has used, the garbage collector's
// too: on a shared machine it moves less with the load than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
