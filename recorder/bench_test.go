package recorder_test

import (
	"fmt"
	"testing"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// BenchmarkRecordedBulk: bulk output of one session (8 MiB per op) over
// the in-process mesh, unrecorded, recorded to the server's directory, and
// streamed to a recorder on another node. The goal: streaming
// costs at most 15% of the unrecorded throughput.
func BenchmarkRecordedBulk(b *testing.B) {
	const size = 8 << 20
	for _, c := range []struct{ name, rule string }{
		{"unrecorded", `"record": false`},
		{"local", `"record": true`},
		{"remote", `"record": true, "recorders": ["tag:recorder"]`},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := newRig(b, rigOptions{onFailure: "fail-closed", handler: bulkHandler, recording: c.rule})
			cl, err := sshmeshtest.Dial(b, r.laptop, r.srv, r.server, "ann")
			if err != nil {
				b.Fatal(err)
			}
			cmd := fmt.Sprintf("%d", size)
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				sess, err := cl.NewSession()
				if err != nil {
					b.Fatal(err)
				}
				out, err := sess.Output(cmd)
				if err != nil || len(out) != size {
					b.Fatalf("%d bytes, %v", len(out), err)
				}
			}
		})
	}
}
