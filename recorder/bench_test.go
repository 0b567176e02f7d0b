package recorder_test

import (
	"bytes"
	"compress/flate"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/asciicast"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// BenchmarkRecordedBulk: bulk output of one session (8 MiB per op) over
// the in-process mesh, unrecorded, recorded to the server's directory, and
// streamed to a recorder on another node. The goal: streaming
// costs at most 15% of the unrecorded throughput.
//
// remote-process runs the recorder in a process of its own (on the same
// two cores here, but not in the server's process). cpu-ms/op is the CPU
// this process used per op (user and system): on a shared machine it
// varies less than the rate, and with remote-process it is the server's
// and client's cost without the recorder's.
//
// end-wait-ms/op is the time from the last byte of output to the exit
// status: where a recorded session waits for its recording to be stored
// (fsynced, and acknowledged by the recorder).
//
// The output is made once, before the timer starts, and the client counts
// what it receives without keeping it: the figures are the session's path
// (SSH, mesh, recording), not the benchmark's own work.
func BenchmarkRecordedBulk(b *testing.B) {
	const size = 8 << 20
	cmd := fmt.Sprintf("%d", size)
	out := bulkOutput(cmd, size)
	handler := sshmesh.HandlerFunc(func(s *sshmesh.Session) { writeChunks(s, out) })
	remote := `"record": true, "recorders": ["tag:recorder"]`
	for _, c := range []struct {
		name, rule string
		process    bool
	}{
		{"unrecorded", `"record": false`, false},
		{"local", `"record": true`, false},
		{"remote", remote, false},
		{"remote-process", remote, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := newRig(b, rigOptions{onFailure: "fail-closed", handler: handler, recording: c.rule, process: c.process})
			cl, err := sshmeshtest.Dial(b, r.laptop, r.srv, r.server, "ann")
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			b.ResetTimer()
			cpu := processCPU()
			var endWait time.Duration
			for b.Loop() {
				sess, err := cl.NewSession()
				if err != nil {
					b.Fatal(err)
				}
				var got countWriter
				sess.Stdout = &got
				if err := sess.Run(cmd); err != nil || got.n.Load() != size {
					b.Fatalf("%d bytes, %v", got.n.Load(), err)
				}
				endWait += time.Since(time.Unix(0, got.last.Load()))
			}
			b.ReportMetric(float64(endWait.Milliseconds())/float64(b.N), "end-wait-ms/op")
			if used := processCPU() - cpu; used > 0 {
				b.ReportMetric(float64(used.Milliseconds())/float64(b.N), "cpu-ms/op")
			}
		})
	}
}

// countWriter counts what is written to it, and when it was written last.
type countWriter struct{ n, last atomic.Int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	w.last.Store(time.Now().UnixNano())
	return len(p), nil
}

// BenchmarkMeshStream: 8 MiB per op over one mesh TCP conn from this
// process to a process of its own that reads and drops it (the recorder
// process of BenchmarkRecordedBulk/remote-process), in writes of 256 KiB
// (the recorder client's largest frame). Its cpu-ms/op is what sending
// one stream over the mesh costs the sender (gVisor TCP, WireGuard, UDP
// syscalls, the ACKs coming back) with nothing of ours on top: the floor
// under the cost of streaming a recording.
func BenchmarkMeshStream(b *testing.B) {
	const size = 8 << 20
	r := newRig(b, rigOptions{process: true})
	conn, err := r.srv.Dial(b.Context(), "tcp", netip.AddrPortFrom(r.recNd.Addr, discardPort).String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	buf := bytes.Repeat([]byte("x"), 256<<10)
	b.SetBytes(size)
	b.ResetTimer()
	cpu := processCPU()
	for b.Loop() {
		for n := 0; n < size; n += len(buf) {
			if _, err := conn.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	if used := processCPU() - cpu; used > 0 {
		b.ReportMetric(float64(used.Milliseconds())/float64(b.N), "cpu-ms/op")
	}
}

// BenchmarkCompressCorpus weighs compressing the stream, which the
// recorder protocol does not do (bench/RESULTS.md says why): the file
// named by SSHMESH_BENCH_CORPUS (real terminal text: `ls -lR /usr`, a
// build log; never repeated lines, which compress far better than real
// output) is encoded as the stream's event lines (32 KiB writes) and
// compressed with compress/flate in 256 KiB frames, each flushed as a
// frame would be. ratio is compressed/encoded bytes; cpu-ns/B is the
// compressor's CPU per encoded byte, to set beside BenchmarkMeshStream's
// cost per byte sent.
func BenchmarkCompressCorpus(b *testing.B) {
	path := os.Getenv("SSHMESH_BENCH_CORPUS")
	if path == "" {
		b.Skip("set SSHMESH_BENCH_CORPUS to a file of real terminal output")
	}
	text, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var cast []byte
	for off := 0; off < len(text); off += 32 << 10 {
		cast = asciicast.AppendEvent(cast, 1.5, asciicast.Output, text[off:min(off+32<<10, len(text))])
	}
	for _, level := range []struct {
		name  string
		level int
	}{{"huffman-only", flate.HuffmanOnly}, {"best-speed", flate.BestSpeed}} {
		b.Run(level.name, func(b *testing.B) {
			var out countWriter
			w, _ := flate.NewWriter(&out, level.level)
			b.SetBytes(int64(len(cast)))
			cpu := processCPU()
			for b.Loop() {
				for off := 0; off < len(cast); off += 256 << 10 {
					w.Write(cast[off:min(off+256<<10, len(cast))])
					w.Flush()
				}
			}
			b.ReportMetric(float64(out.n.Load())/float64(len(cast))/float64(b.N), "ratio")
			b.ReportMetric(float64(processCPU()-cpu)/float64(len(cast))/float64(b.N), "cpu-ns/B")
		})
	}
}
