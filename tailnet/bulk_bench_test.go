package tailnet_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// BenchmarkTailnetBulk is the bulk rows of BenchmarkTailnetSetup alone, for
// A/B runs of the server: one or more `sshmesh-tailnet serve` variants and
// tailscaled --ssh on one headscale, the same stock ssh client through
// `tailscale nc` (chacha20-poly1305, curve25519), `head -c SIZE /dev/zero`
// down and `cat > /dev/null` up, round after round, each round in a
// different order so that no target always goes first. Each server
// process's CPU seconds per GiB moved (user+sys from /proc) is the figure
// to read on a shared machine; MiB/s follows the share of CPU a run got.
//
//	SSHMESH_TAILNET_BULK_VARIANTS='a:/tmp/old-bin b::GOGC=100' \
//	  go test -run '^$' -bench TailnetBulk -benchtime 1x .
//
// Env: SSHMESH_TAILNET_BULK_VARIANTS (space-separated NAME[:BIN[:VAR=VALUE...]];
// an empty BIN builds this tree; default one variant "sshmesh" built from
// this tree), SSHMESH_TAILNET_BENCH_SIZE (default 64M),
// SSHMESH_TAILNET_BENCH_RUNS (rounds; 5), SSHMESH_TAILNET_BENCH_PERF (a
// directory: `perf record -g` of each server through every run, into
// NAME-rROUND-DIRECTION.perf.data).
func BenchmarkTailnetBulk(b *testing.B) {
	tl := needTools(b)
	testkit.NeedBinary(b, "ssh", "openssh-client")
	size := envSize(b, "SSHMESH_TAILNET_BENCH_SIZE", 64<<20)
	runs := envInt(b, "SSHMESH_TAILNET_BENCH_RUNS", 5)
	specs := strings.Fields(os.Getenv("SSHMESH_TAILNET_BULK_VARIANTS"))
	if len(specs) == 0 {
		specs = []string{"sshmesh"}
	}
	user := testkit.NewUser(b, testkit.UserOptions{})
	hs := startHeadscale(b, tl)
	alice := hs.createUser("alice", "alice@example.com")

	// The servers one after the other (headscale's CLI times out when asked
	// for many auth keys at once), then the two tailscaled nodes together.
	var ordered []*benchTarget
	for i, spec := range specs {
		parts := strings.Split(spec, ":")
		name, bin, env := parts[0], "", []string{}
		if len(parts) > 1 && parts[1] != "" {
			abs, err := filepath.Abs(parts[1])
			if err != nil {
				b.Fatal(err)
			}
			bin = abs
		}
		if len(parts) > 2 {
			env = parts[2:]
		}
		p := startServeVariant(b, hs, user.Name, fmt.Sprintf("sshmesh-bulk-%d", i), bin, env)
		ordered = append(ordered, &benchTarget{name: name, host: p.host, pid: p.pid})
	}
	tsSSH, client := startTailscaleSSHAndClient(b, tl, hs, alice)
	ts := &benchTarget{name: "tailscaled-ssh", host: tsSSH.ip4(), pid: tsSSH.pid}
	ordered = append(ordered, ts)

	run := func(tg *benchTarget, command string, stdin *os.File) time.Duration {
		return timeSSH(b, client, user.Name, tg, command, stdin)
	}
	for range 2 {
		for _, tg := range ordered {
			run(tg, "true", nil)
		}
	}
	upFile := zeros(b, size)
	for _, tg := range ordered {
		resetPeakRSS(b, tg) // the peak below is the bulk phase's
	}
	mib := float64(size) / (1 << 20)
	gib := float64(size) / (1 << 30)
	perfDir := os.Getenv("SSHMESH_TAILNET_BENCH_PERF")
	// cpu[target][direction] per round: s/GiB.
	cpu := map[*benchTarget]map[string][]float64{}
	for _, tg := range ordered {
		cpu[tg] = map[string][]float64{}
	}
	for r := range runs {
		order := append(ordered[r%len(ordered):], ordered[:r%len(ordered)]...)
		order = append([]*benchTarget(nil), order...)
		for _, dir := range []string{"down", "up"} {
			for _, tg := range order {
				var f *os.File
				command := fmt.Sprintf("head -c %d /dev/zero", size)
				if dir == "up" {
					var err error
					if f, err = os.Open(upFile); err != nil {
						b.Fatal(err)
					}
					command = "cat > /dev/null"
				}
				stop := perfRecord(b, perfDir, 0, &benchTarget{name: fmt.Sprintf("%s-r%d", tg.name, r), pid: tg.pid}, dir)
				cpu0 := procCPUSeconds(b, tg.pid)
				rate := mib / run(tg, command, f).Seconds()
				c := procCPUSeconds(b, tg.pid) - cpu0
				stop()
				if f != nil {
					f.Close()
				}
				if dir == "down" {
					tg.down = append(tg.down, rate)
				} else {
					tg.up = append(tg.up, rate)
				}
				cpu[tg][dir] = append(cpu[tg][dir], c/gib)
			}
		}
	}

	for _, tg := range ordered {
		tg.rssPeak = procStatusKiB(b, tg.pid, "VmHWM")
	}
	var s strings.Builder
	fmt.Fprintf(&s, "| server | down MiB/s (median) | up MiB/s (median) | CPU s/GiB down (median; runs) | CPU s/GiB up (median; runs) | CPU down ÷ tailscaled's (median of rounds) | CPU up ÷ tailscaled's (median of rounds) | RSS peak, MiB |\n|---|---|---|---|---|---|---|---|\n")
	fmtRuns := func(xs []float64) string {
		var p []string
		for _, x := range xs {
			p = append(p, fmt.Sprintf("%.1f", x))
		}
		return strings.Join(p, " ")
	}
	roundRatio := func(tg *benchTarget, dir string) float64 {
		var rs []float64
		for i := range cpu[tg][dir] {
			rs = append(rs, cpu[tg][dir][i]/cpu[ts][dir][i])
		}
		return median(rs)
	}
	for _, tg := range ordered {
		fmt.Fprintf(&s, "| %s | %.1f | %.1f | %.1f (%s) | %.1f (%s) | %.2f× | %.2f× | %.0f |\n", tg.name,
			median(tg.down), median(tg.up),
			median(cpu[tg]["down"]), fmtRuns(cpu[tg]["down"]),
			median(cpu[tg]["up"]), fmtRuns(cpu[tg]["up"]),
			roundRatio(tg, "down"), roundRatio(tg, "up"), float64(tg.rssPeak)/1024)
	}
	fmt.Print("\n" + s.String() + "\n")
	if out := os.Getenv("SSHMESH_TAILNET_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(s.String()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for _, tg := range ordered {
		b.Run(tg.name, func(b *testing.B) {
			for b.Loop() {
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(median(tg.down), "down-MiB/s")
			b.ReportMetric(median(tg.up), "up-MiB/s")
			b.ReportMetric(median(cpu[tg]["down"]), "cpu-s/GiB-down")
			b.ReportMetric(median(cpu[tg]["up"]), "cpu-s/GiB-up")
			b.ReportMetric(float64(tg.rssPeak)/1024, "rss-peak-MiB")
		})
	}
}
