// Package bench holds the test that runs bench/run --quick: the benchmark
// suite of sshmesh against stock OpenSSH sshd over WireGuard (see
// README.md). The suite itself is the bash script bench/run; this test only
// checks that every setup could run and the table is complete. It asserts
// no speed.
package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

func TestRunQuick(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	for _, b := range [][2]string{
		{"bash", "bash"}, {"ip", "iproute2"}, {"unshare", "util-linux"},
		{"timeout", "coreutils"}, {"script", "bsdutils"}, {"ssh", "openssh-client"}, {"go", "golang"},
	} {
		sshmeshtest.NeedBinary(t, b[0], b[1])
	}
	// sshd, wg and wireguard-go: bench/run installs them with apt-get.
	if _, err := exec.LookPath("apt-get"); err != nil {
		for _, b := range [][2]string{{"sshd", "openssh-server"}, {"wg", "wireguard-tools"}, {"wireguard-go", "wireguard-go"}} {
			if _, err := os.Stat("/usr/sbin/" + b[0]); err != nil {
				sshmeshtest.NeedBinary(t, b[0], b[1])
			}
		}
	}
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("-short: bench/run --quick takes up to 3 minutes (never skipped under CI=true)")
	}

	out := filepath.Join(t.TempDir(), "quick.md")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "run", "--quick")
	cmd.Env = append(os.Environ(), "BENCH_OUT="+out)
	cmd.WaitDelay = 30 * time.Second
	start := time.Now()
	b, err := cmd.CombinedOutput()
	t.Logf("bench/run --quick took %v", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("bench/run --quick: %v\n%s", err, tail(string(b), 60))
	}
	table, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("no results file: %v\n%s", err, tail(string(b), 40))
	}
	t.Logf("\n%s", table)

	// Every row of the results table has its cells filled: no setup was
	// skipped and no figure is missing.
	rows := 0
	sc := bufio.NewScanner(strings.NewReader(string(table)))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| metric") || strings.HasPrefix(line, "| goal") {
			continue
		}
		rows++
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i, c := range cells {
			c = strings.TrimSpace(c)
			if c == "" || c == "NA" || c == "?" {
				t.Errorf("empty cell %d in row %q", i, line)
			}
		}
	}
	if rows < 16 {
		t.Errorf("table has %d rows, want at least 16:\n%s", rows, table)
	}
	for _, setup := range []string{"(1) sshmesh nc", "(2) sshmesh via wg-go", "(3) sshd over wg-go", "(4) sshd loopback"} {
		if !strings.Contains(string(table), setup) {
			t.Errorf("table lacks setup %s", setup)
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
