package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"testing"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/netstack"
)

// BenchmarkServeScale runs what `sshmesh serve` does at start-up (read
// the wg-quick file and the policy, bring the node up) and then what a
// SIGHUP reload of one changed peer does, on the files bench/scalegen
// wrote to $SSHMESH_SCALE_DIR (skipped without it), for profiling with
// -cpuprofile and -memprofile: bench/run --scale measures the real
// process.
func BenchmarkServeScale(b *testing.B) {
	dir := os.Getenv("SSHMESH_SCALE_DIR")
	if dir == "" {
		b.Skip("SSHMESH_SCALE_DIR is not set (bench/scalegen writes the files)")
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	conf, peerConf := filepath.Join(dir, "server.conf"), filepath.Join(dir, "server-peer.conf")
	pol := filepath.Join(dir, "policy.hujson")
	b.Run("startup", func(b *testing.B) {
		for b.Loop() {
			cfg, _, err := netstack.LoadConfig(conf)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := loadPolicy(pol, cfg.PrivateKey.Public()); err != nil {
				b.Fatal(err)
			}
			cfg.ListenPort = 0
			node, err := netstack.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			node.Close()
		}
	})
	b.Run("reload", func(b *testing.B) {
		cfg, _, err := netstack.LoadConfig(conf)
		if err != nil {
			b.Fatal(err)
		}
		doc, err := loadPolicy(pol, cfg.PrivateKey.Public())
		if err != nil {
			b.Fatal(err)
		}
		started := interfaceOf(cfg)
		cfg.ListenPort = 0
		node, err := netstack.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer node.Close()
		if p := os.Getenv("SSHMESH_SCALE_HEAP"); p != "" {
			runtime.GC()
			f, err := os.Create(p)
			if err != nil {
				b.Fatal(err)
			}
			pprof.WriteHeapProfile(f)
			f.Close()
		}
		r := &reloadable{}
		r.doc.Store(doc)
		rl := &meshReload{wgPath: conf, policyPath: pol, started: started, node: node, pol: r, srv: &sshmesh.Server{Policy: r}, logger: logger}
		if !rl.reload() { // learns the files' digests (serve has them from start-up): the timed reloads change one peer
			b.Fatal("reload failed")
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
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
