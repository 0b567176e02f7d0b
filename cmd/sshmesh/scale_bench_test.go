package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"testing"
)

// BenchmarkServeScale runs what `sshmesh serve` does at start-up (read
// the wg-quick file and the policy, bring the node up) and then what a
// SIGHUP reload of one changed peer does, on the files bench/scalegen
// wrote to $SSHMESH_SCALE_DIR (skipped without it), for profiling with
// -cpuprofile and -memprofile: bench/run --scale measures the real
// process.
func BenchmarkServeScale(b *testing.B) {
	dir := scaleDir(b)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	conf, peerConf := filepath.Join(dir, "server.conf"), filepath.Join(dir, "server-peer.conf")
	pol := filepath.Join(dir, "policy.hujson")
	b.Run("startup", func(b *testing.B) {
		for b.Loop() {
			rl, err := startReload(conf, pol, logger)
			if err != nil {
				b.Fatal(err)
			}
			rl.node.Close()
		}
	})
	b.Run("reload", func(b *testing.B) {
		rl := startTestReload(b, conf, pol, logger)
		if p := os.Getenv("SSHMESH_SCALE_HEAP"); p != "" {
			runtime.GC()
			f, err := os.Create(p)
			if err != nil {
				b.Fatal(err)
			}
			pprof.WriteHeapProfile(f)
			f.Close()
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ { // the files in turn: each reload changes one peer
			rl.wgPath = conf
			if i%2 == 0 {
				rl.wgPath = peerConf
			}
			if !rl.reload() {
				b.Fatal("reload failed")
			}
		}
	})
}

// scaleDir is $SSHMESH_SCALE_DIR, where bench/scalegen wrote its files;
// without it the benchmark is skipped.
func scaleDir(b *testing.B) string {
	b.Helper()
	dir := os.Getenv("SSHMESH_SCALE_DIR")
	if dir == "" {
		b.Skip("SSHMESH_SCALE_DIR is not set (bench/scalegen writes the files)")
	}
	return dir
}
