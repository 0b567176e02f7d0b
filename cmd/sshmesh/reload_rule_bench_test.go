//go:build unix

package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/netstack"
)

// BenchmarkReloadRuleScale is what a SIGHUP reload does when only one
// rule of the policy changed (policy.hujson and policy-rule.hujson of
// bench/scalegen in turn, in $SSHMESH_SCALE_DIR; skipped without it), for
// profiling with -cpuprofile: the nodes of the policy are not compiled
// again (policy.Document.Reparse).
func BenchmarkReloadRuleScale(b *testing.B) {
	dir := os.Getenv("SSHMESH_SCALE_DIR")
	if dir == "" {
		b.Skip("SSHMESH_SCALE_DIR is not set (bench/scalegen writes the files)")
	}
	conf := filepath.Join(dir, "server.conf")
	policies := []string{filepath.Join(dir, "policy-rule.hujson"), filepath.Join(dir, "policy.hujson")}
	cfg, _, err := netstack.LoadConfig(conf)
	if err != nil {
		b.Fatal(err)
	}
	doc, err := loadPolicy(policies[1], cfg.PrivateKey.Public())
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
	r := &reloadable{}
	r.doc.Store(doc)
	rl := &meshReload{wgPath: conf, started: started, node: node, pol: r, srv: &sshmesh.Server{Policy: r},
		logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	rl.policyPath = policies[1]
	if !rl.reload() { // the wg-quick file, once
		b.Fatal("reload failed")
	}
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
