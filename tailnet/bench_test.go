package tailnet_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// BenchmarkStockSSHTrue is `ssh host true` from alice's node (the stock
// ssh through `tailscale nc`, curve25519, chacha20-poly1305) against
// sshmesh on tsnet and against Tailscale SSH (tailscaled --ssh, userspace)
// on the same headscale: both use Tailscale's userspace data path, the SSH
// layer and session start differ. Run with -benchtime=30x; the first
// login of each is made before timing (path discovery takes seconds).
func BenchmarkStockSSHTrue(b *testing.B) {
	f := newTailnetFixture(b)
	tl := needTools(b)
	tsSSH := startTailscaled(b, tl, f.hs, "tailscale-ssh", f.hs.authKey(0, "tag:server"), "--ssh")
	tsIP := tsSSH.ip4()
	targets := []struct{ name, host string }{{"sshmesh-tsnet", f.host}, {"tailscaled-ssh", tsIP}}
	args := func(host string) []string {
		return append(append(sshOptions(f.alice), "-o", "Ciphers=chacha20-poly1305@openssh.com",
			"-o", "KexAlgorithms=curve25519-sha256", f.aliceUser.Name+"@"+host), "true")
	}
	for _, tg := range targets {
		if out, err := exec.Command("ssh", args(tg.host)...).CombinedOutput(); err != nil {
			b.Fatalf("warm-up ssh to %s: %v\n%s", tg.name, err, out)
		}
	}
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			for b.Loop() {
				if out, err := exec.Command("ssh", args(tg.host)...).CombinedOutput(); err != nil {
					b.Fatalf("ssh to %s: %v\n%s", tg.name, err, out)
				}
			}
		})
	}
}

// BenchmarkTailnetSetup is bench/run's tailnet setup (`bench/run
// --tailnet`): sshmesh on tsnet, as a separate `sshmesh-tailnet serve`
// process, against Tailscale SSH (tailscaled --ssh, userspace networking),
// both nodes on one headscale, both reached by the same stock ssh client
// from alice's tailscaled node through `tailscale nc`, chacha20-poly1305
// and curve25519-sha256 pinned. It measures, interleaving the two targets
// so the shared machine's load hits both alike: `ssh host true` (median
// and p90), bulk `head -c SIZE /dev/zero` down and `cat > /dev/null` up
// (MiB/s from the ssh's start to its end, median of the runs), and each
// server process's RSS (VmRSS) idle after warm-up logins, its peak during
// bulk (VmHWM, reset before bulk) and 2 s after, and its CPU time per GiB
// moved each way. Run it once:
//
//	go test -run '^$' -bench TailnetSetup -benchtime 1x .
//
// Env: SSHMESH_TAILNET_BENCH_SIZE (bytes, k/M/G suffixes; default 256M),
// SSHMESH_TAILNET_BENCH_RUNS (bulk runs per direction; 3),
// SSHMESH_TAILNET_BENCH_LAT_N (`ssh host true` per target; 20),
// SSHMESH_TAILNET_BENCH_OUT (also write the Markdown table there),
// SSHMESH_TAILNET_BENCH_PERF (a directory: `perf record -g` each server
// process through its first bulk run each way, into TARGET-DIR.perf.data).
// Each target is a sub-benchmark whose metrics are those figures; the
// table with the ratios is printed.
func BenchmarkTailnetSetup(b *testing.B) {
	tl := needTools(b)
	testkit.NeedBinary(b, "ssh", "openssh-client")
	size := envSize(b, "SSHMESH_TAILNET_BENCH_SIZE", 256<<20)
	runs := envInt(b, "SSHMESH_TAILNET_BENCH_RUNS", 3)
	latN := envInt(b, "SSHMESH_TAILNET_BENCH_LAT_N", 20)
	user := testkit.NewUser(b, testkit.UserOptions{})
	hs := startHeadscale(b, tl)
	alice := hs.createUser("alice", "alice@example.com")

	ours := startServeProcess(b, hs, user.Name)
	tsSSH, client := startTailscaleSSHAndClient(b, tl, hs, alice)
	targets := []*benchTarget{
		{name: "sshmesh-tsnet", host: ours.host, pid: ours.pid},
		{name: "tailscaled-ssh", host: tsSSH.ip4(), pid: tsSSH.pid},
	}
	run := func(tg *benchTarget, command string, stdin *os.File) time.Duration {
		return timeSSH(b, client, user.Name, tg, command, stdin)
	}

	// Warm-up: the first logins find the path (seconds) and fill caches.
	for range 2 {
		for _, tg := range targets {
			run(tg, "true", nil)
		}
	}
	time.Sleep(2 * time.Second)
	for _, tg := range targets {
		tg.rssIdle = procStatusKiB(b, tg.pid, "VmRSS")
	}
	for range latN {
		for _, tg := range targets {
			tg.lat = append(tg.lat, run(tg, "true", nil).Seconds()*1000)
		}
	}

	upFile := zeros(b, size)
	for _, tg := range targets {
		resetPeakRSS(b, tg) // the peak below is the bulk phase's
	}
	mib := float64(size) / (1 << 20)
	perfDir := os.Getenv("SSHMESH_TAILNET_BENCH_PERF")
	for r := range runs {
		for _, tg := range targets {
			stop := perfRecord(b, perfDir, r, tg, "down")
			cpu0 := procCPUSeconds(b, tg.pid)
			tg.down = append(tg.down, mib/run(tg, fmt.Sprintf("head -c %d /dev/zero", size), nil).Seconds())
			tg.cpuDown += procCPUSeconds(b, tg.pid) - cpu0
			stop()
		}
		for _, tg := range targets {
			f, err := os.Open(upFile)
			if err != nil {
				b.Fatal(err)
			}
			stop := perfRecord(b, perfDir, r, tg, "up")
			cpu0 := procCPUSeconds(b, tg.pid)
			tg.up = append(tg.up, mib/run(tg, "cat > /dev/null", f).Seconds())
			tg.cpuUp += procCPUSeconds(b, tg.pid) - cpu0
			stop()
			f.Close()
		}
	}
	for _, tg := range targets {
		tg.rssPeak = procStatusKiB(b, tg.pid, "VmHWM")
	}
	time.Sleep(2 * time.Second)
	for _, tg := range targets {
		tg.rssAfter = procStatusKiB(b, tg.pid, "VmRSS")
	}

	table := tailnetBenchTable(targets[0], targets[1], size, runs, latN)
	fmt.Print("\n" + table + "\n") // stdout: a benchmark's b.Log is not shown without -v
	if out := os.Getenv("SSHMESH_TAILNET_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			for b.Loop() {
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(median(tg.lat), "true-ms")
			b.ReportMetric(median(tg.down), "down-MiB/s")
			b.ReportMetric(median(tg.up), "up-MiB/s")
			b.ReportMetric(tg.cpuDown/(float64(size)*float64(runs)/(1<<30)), "cpu-s/GiB-down")
			b.ReportMetric(tg.cpuUp/(float64(size)*float64(runs)/(1<<30)), "cpu-s/GiB-up")
			b.ReportMetric(float64(tg.rssIdle)/1024, "rss-idle-MiB")
			b.ReportMetric(float64(tg.rssPeak)/1024, "rss-peak-MiB")
			b.ReportMetric(float64(tg.rssAfter)/1024, "rss-after-MiB")
		})
	}
}

// startTailscaleSSHAndClient starts, side by side, Tailscale SSH
// (tailscaled --ssh, userspace networking, tagged tag:server by its auth
// key) and alice's tailscaled node, through which the stock ssh client
// reaches the servers (`tailscale nc`).
func startTailscaleSSHAndClient(tb testing.TB, tl tools, hs *headscale, alice uint64) (tsSSH, client *tailscaled) {
	tb.Helper()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tsSSH = startTailscaled(tb, tl, hs, "tailscale-ssh", hs.authKey(0, "tag:server"), "--ssh")
	}()
	go func() { defer wg.Done(); client = startTailscaled(tb, tl, hs, "alice-laptop", hs.authKey(alice)) }()
	wg.Wait()
	if tb.Failed() {
		tb.FailNow()
	}
	return tsSSH, client
}

// timeSSH runs command on tg as user with the stock ssh client from
// client's node (chacha20-poly1305 and curve25519-sha256 pinned) and
// returns how long ssh ran. stdin nil reads /dev/null; the output goes to
// /dev/null, so no copying in this process.
func timeSSH(tb testing.TB, client *tailscaled, user string, tg *benchTarget, command string, stdin *os.File) time.Duration {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	args := append(append(sshOptions(client), "-c", "chacha20-poly1305@openssh.com",
		"-o", "KexAlgorithms=curve25519-sha256", user+"@"+tg.host), command)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	cmd.Stdin = stdin
	errOut := &bytes.Buffer{}
	cmd.Stderr = errOut
	start := time.Now()
	if err := cmd.Run(); err != nil {
		tb.Fatalf("ssh %s %q: %v\n%s", tg.name, command, err, errOut)
	}
	return time.Since(start)
}

// zeros is a file of size zero bytes to upload: sparse, so reading it
// costs no disk.
func zeros(tb testing.TB, size int64) string {
	tb.Helper()
	name := filepath.Join(tb.TempDir(), "zeros")
	if err := os.WriteFile(name, nil, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(name, size); err != nil {
		tb.Fatal(err)
	}
	return name
}

// resetPeakRSS resets tg's peak RSS (VmHWM) to its current RSS, so that a
// later reading of the peak is that of what ran since.
func resetPeakRSS(tb testing.TB, tg *benchTarget) {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", tg.pid), []byte("5"), 0); err != nil {
		tb.Logf("cannot reset the peak RSS of %s (%v): its peak is the process's whole life", tg.name, err)
	}
}

// perfRecord starts `perf record -g` on tg's server process for the first
// bulk run (r == 0) in direction dir when dir is set, and returns what
// stops it; otherwise it does nothing.
func perfRecord(tb testing.TB, dir string, r int, tg *benchTarget, direction string) (stop func()) {
	if dir == "" || r != 0 {
		return func() {}
	}
	out := filepath.Join(dir, tg.name+"-"+direction+".perf.data")
	cmd := exec.Command("perf", "record", "-q", "-F", "499", "-g", "-p", strconv.Itoa(tg.pid), "-o", out)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("perf record: %v", err)
	}
	time.Sleep(time.Second) // perf attaches
	return func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}
}

// benchTarget is one SSH server of BenchmarkTailnetSetup and its figures.
type benchTarget struct {
	name, host                 string
	pid                        int
	lat, down, up              []float64 // ms; MiB/s; MiB/s
	rssIdle, rssPeak, rssAfter int       // KiB
	cpuDown, cpuUp             float64   // the server process's CPU seconds over all bulk runs each way
}

// tailnetBenchTable is the Markdown table of BenchmarkTailnetSetup, with
// ours/theirs ratios and the goals of issue 23.
func tailnetBenchTable(ours, ts *benchTarget, size int64, runs, latN int) string {
	var s strings.Builder
	mibs := func(k int) string { return fmt.Sprintf("%.1f", float64(k)/1024) }
	ratio := func(a, b float64) string { return fmt.Sprintf("%.2f×", a/b) }
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	fmt.Fprintf(&s, "| metric | sshmesh-tailnet (tsnet) | tailscaled --ssh | sshmesh / tailscaled |\n|---|---|---|---|\n")
	row := func(label string, a, b float64, format string) {
		fmt.Fprintf(&s, "| %s | "+format+" | "+format+" | %s |\n", label, a, b, ratio(a, b))
	}
	row(fmt.Sprintf("`ssh host true` median, ms (n=%d after 2 warm-ups)", latN), median(ours.lat), median(ts.lat), "%.0f")
	row("`ssh host true` p90, ms", percentile(ours.lat, 0.9), percentile(ts.lat, 0.9), "%.0f")
	row(fmt.Sprintf("bulk download %d MiB, MiB/s (median of %d)", size>>20, runs), median(ours.down), median(ts.down), "%.1f")
	row(fmt.Sprintf("bulk upload %d MiB, MiB/s (median of %d)", size>>20, runs), median(ours.up), median(ts.up), "%.1f")
	gib := float64(size) * float64(runs) / (1 << 30)
	row("server CPU per GiB down, s (user+sys of the server process; steadier than MiB/s on a loaded machine)", ours.cpuDown/gib, ts.cpuDown/gib, "%.1f")
	row("server CPU per GiB up, s", ours.cpuUp/gib, ts.cpuUp/gib, "%.1f")
	fmt.Fprintf(&s, "| server RSS idle, MiB (after warm-up logins) | %s | %s | %s |\n", mibs(ours.rssIdle), mibs(ts.rssIdle), ratio(float64(ours.rssIdle), float64(ts.rssIdle)))
	fmt.Fprintf(&s, "| server RSS peak during bulk, MiB (VmHWM) | %s | %s | %s |\n", mibs(ours.rssPeak), mibs(ts.rssPeak), ratio(float64(ours.rssPeak), float64(ts.rssPeak)))
	fmt.Fprintf(&s, "| server RSS 2 s after bulk, MiB | %s | %s | %s |\n", mibs(ours.rssAfter), mibs(ts.rssAfter), ratio(float64(ours.rssAfter), float64(ts.rssAfter)))
	fmt.Fprintf(&s, "\n| goal (issue 23) | figure | verdict |\n|---|---|---|\n")
	d, u, l := median(ours.down)/median(ts.down), median(ours.up)/median(ts.up), median(ours.lat)/median(ts.lat)
	fmt.Fprintf(&s, "| bulk down ≥ 1.0× Tailscale SSH | %.2f× | %s |\n", d, verdict(d >= 1))
	fmt.Fprintf(&s, "| bulk up ≥ 1.0× Tailscale SSH | %.2f× | %s |\n", u, verdict(u >= 1))
	fmt.Fprintf(&s, "| `ssh host true` median ≤ 0.8× Tailscale SSH | %.2f× | %s |\n", l, verdict(l <= 0.8))
	return s.String()
}

// median is the middle of xs (the mean of the two middle ones).
func median(xs []float64) float64 { return percentile(xs, 0.5) }

// percentile is the p quantile of xs, interpolated between neighbours.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := p * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}

// procStatusKiB reads a field such as VmRSS (in kB) from /proc/PID/status.
func procStatusKiB(tb testing.TB, pid int, field string) int {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				tb.Fatalf("/proc/%d/status: %s: %v", pid, line, err)
			}
			return n
		}
	}
	tb.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// procCPUSeconds is the user+system CPU time of process pid (its threads,
// not its children), from /proc/PID/stat.
func procCPUSeconds(tb testing.TB, pid int) float64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after the command's name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		tb.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64) // field 14 of proc(5)
	stime, err2 := strconv.ParseFloat(f[12], 64) // field 15
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return (utime + stime) / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTicks = 100

// envInt is the positive integer in the environment variable name, or def.
func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// envSize is the byte count (suffix k, M or G: KiB, MiB, GiB) in the
// environment variable name, or def.
func envSize(tb testing.TB, name string, def int64) int64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	mult := int64(1)
	if i := strings.IndexAny(v, "kKmMgG"); i == len(v)-1 {
		mult = map[byte]int64{'k': 1 << 10, 'K': 1 << 10, 'm': 1 << 20, 'M': 1 << 20, 'g': 1 << 30, 'G': 1 << 30}[v[i]]
		v = v[:i]
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a size in bytes, e.g. 64M or 1G", name, os.Getenv(name))
	}
	return n * mult
}

// serveProcess is a running `sshmesh-tailnet serve`.
type serveProcess struct {
	host string // its tailnet IPv4 address
	pid  int
}

// startServeProcess builds sshmesh-tailnet and runs `sshmesh-tailnet
// serve` as a node tagged tag:server (by its auth key) on h, letting alice@example.com log
// in as user; it is stopped when the benchmark ends.
func startServeProcess(tb testing.TB, h *headscale, user string) *serveProcess {
	tb.Helper()
	return startServeVariant(tb, h, user, "sshmesh-bench", "", nil)
}

// startServeVariant is startServeProcess for the binary bin (built from
// this tree when empty), with env added to its environment, as the node
// hostname.
func startServeVariant(tb testing.TB, h *headscale, user, hostname, bin string, env []string) *serveProcess {
	tb.Helper()
	dir := tb.TempDir()
	pol := `{"identity": "tailnet", "tagOwners": {"tag:server": ["alice@example.com"]},
  "ssh": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server"], "users": ["` + user + `"]}]}`
	if err := os.WriteFile(filepath.Join(dir, "policy.hujson"), []byte(pol), 0o600); err != nil {
		tb.Fatal(err)
	}
	p := startProgramBin(tb, h, bin, env, "tag:server", `serving SSH on the tailnet .* on (\d+\.\d+\.\d+\.\d+)`,
		"serve", "--tailnet", "--policy", filepath.Join(dir, "policy.hujson"),
		"--hostname", hostname, "--check-port", "0") // the key carries tag:server
	return &serveProcess{host: p.host, pid: p.pid}
}
