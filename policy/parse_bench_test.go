package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// scaleDoc is the policy bench/scalegen writes for bench/run --scale: a
// tagged server and n nodes of 1,000 owners, 100 rules (one per owner,
// into the server); changedRule (-1: none) lets deploy in too.
func scaleDoc(n, changedRule int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n  \"nodes\": {\n    \"server\": {\"key\": %q, \"tags\": [\"tag:server\"]},\n", testKey(0).String())
	for i := range n {
		fmt.Fprintf(&b, "    \"c%d\": {\"key\": %q, \"owner\": \"u%d@example.com\"},\n", i, testKey(i+1).String(), i%1000)
	}
	b.WriteString("  },\n  \"tagOwners\": {\"tag:server\": [\"u0@example.com\"]},\n  \"ssh\": [\n")
	for r := range 100 {
		users := `"root"`
		if r == changedRule {
			users = `"root", "deploy"`
		}
		fmt.Fprintf(&b, "    {\"action\": \"accept\", \"src\": [\"u%d@example.com\"], \"dst\": [\"tag:server\"], \"users\": [%s]},\n", r, users)
	}
	b.WriteString("  ],\n}\n")
	return []byte(b.String())
}

// BenchmarkParseScale parses the 100,001-node document of bench/run
// --scale (start-up's policy work). live-MiB is the heap a parsed
// document holds.
func BenchmarkParseScale(b *testing.B) {
	data := scaleDoc(100000, -1)
	b.ReportAllocs()
	cpu := startCPU()
	for b.Loop() {
		if _, err := Parse(data, "scale.hujson"); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b)
	b.ReportMetric(float64(liveBytes(func() any {
		doc, err := Parse(data, "scale.hujson")
		if err != nil {
			b.Fatal(err)
		}
		return doc
	}))/(1<<20), "live-MiB")
}

// liveBytes returns how many bytes of heap what make returns holds: the
// heap with it, all else collected, less the heap once it is dropped.
func liveBytes(make func() any) int64 {
	var with, without runtime.MemStats
	v := make()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&with)
	runtime.KeepAlive(v)
	v = nil
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&without)
	return int64(with.HeapAlloc) - int64(without.HeapAlloc)
}

// BenchmarkReparseRuleScale is a reload of that document that changes one
// rule (and back, in turn): the nodes are those of the document before.
func BenchmarkReparseRuleScale(b *testing.B) {
	files := [][]byte{scaleDoc(100000, 99), scaleDoc(100000, -1)}
	doc, err := Parse(files[1], "scale.hujson")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := startCPU()
	for i := 0; b.Loop(); i++ {
		if doc, err = doc.Reparse(files[i%2], "scale.hujson"); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b)
}

// BenchmarkReparseFileRuleScale is that reload as SIGHUP makes it: the
// file read by ReadFile (its nodes into a digest, not kept) and parsed by
// ReparseFile.
func BenchmarkReparseFileRuleScale(b *testing.B) {
	dir := b.TempDir()
	paths := []string{filepath.Join(dir, "rule.hujson"), filepath.Join(dir, "base.hujson")}
	for i, data := range [][]byte{scaleDoc(100000, 99), scaleDoc(100000, -1)} {
		if err := os.WriteFile(paths[i], data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	doc, err := Load(paths[1])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu := startCPU()
	for i := 0; b.Loop(); i++ {
		f, err := ReadFile(paths[i%2], doc)
		if err != nil {
			b.Fatal(err)
		}
		if doc, err = doc.ReparseFile(f); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b)
}
