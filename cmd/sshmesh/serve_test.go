package main

import (
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"48MiB": 48 << 20, "1GiB": 1 << 30, "512KiB": 512 << 10, "1000": 1000, "10B": 10} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "48MB", "0"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q): no error", in)
		}
	}
}

func TestMemoryLimit(t *testing.T) {
	for _, v := range []string{"auto", "off", "64MiB"} {
		if err := checkMemoryLimit(v); err != nil {
			t.Errorf("checkMemoryLimit(%q): %v", v, err)
		}
	}
	if err := checkMemoryLimit("64MB"); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Errorf("checkMemoryLimit(64MB) = %v; want an error naming the flag", err)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		t.Skip("GOMEMLIMIT is set; it wins over --memory-limit")
	}
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })

	setMemoryLimit("64MiB")
	if got := debug.SetMemoryLimit(-1); got != 64<<20 {
		t.Errorf("after 64MiB the limit is %d", got)
	}
	// auto: what the process holds, plus the headroom. Other tests run
	// beside this one, so what it holds moves between two readings.
	head, _ := parseBytes(autoMemoryHeadroom)
	before := runtimeMemory()
	setMemoryLimit("auto")
	got := debug.SetMemoryLimit(-1)
	if held := got - head; held < before/2 || held > before*2 {
		t.Errorf("auto set %d MiB: %d MiB above the headroom %s, but the process holds about %d MiB", got>>20, held>>20, autoMemoryHeadroom, before>>20)
	}
}
