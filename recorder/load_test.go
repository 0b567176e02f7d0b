package recorder_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/recorder"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// bulkOutput is what session cmd prints: n bytes of lines that name it.
func bulkOutput(cmd string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%s line %06d: the quick brown fox jumps over the lazy dog\n", cmd, i)
	}
	return b.Bytes()[:n]
}

// bulkHandler prints bulkOutput of the exec command's size in bytes.
var bulkHandler = sshmesh.HandlerFunc(func(s *sshmesh.Session) {
	var n int
	fmt.Sscanf(s.RawCommand(), "%d", &n)
	writeChunks(s, bulkOutput(s.RawCommand(), n))
})

// writeChunks writes out to the session in writes of 32 KiB.
func writeChunks(s *sshmesh.Session, out []byte) {
	for len(out) > 0 {
		k := min(len(out), 32<<10)
		if _, err := s.Write(out[:k]); err != nil {
			return
		}
		out = out[k:]
	}
}

// TestLoad: the 50 concurrent recorded sessions of 1 MiB each all
// reach the recorder complete and byte for byte
// (SSHMESH_RECORDER_LOAD_SESSIONS and _SIZE change the figures). It used
// to stall now and then: one SSH conn between two in-process nodes
// stopped carrying anything in either direction (the client had 32 or
// 64 KiB of the output, the server's keepalives never got through).
// gVisor's CUBIC could take a sender's congestion window to zero after
// packet losses; netstack now runs Reno (see tcpCongestionControl there
// and its TestSlowReadersNoStall, which reproduces the stall).
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("50 sessions of 1 MiB; skipped with -short")
	}
	sessions, size := 50, 1<<20
	if raceEnabled {
		// Under the race detector 50 x 1 MiB outlasts the recorder's
		// acknowledgement bound on a loaded 2-core machine (half the
		// recordings acknowledged only in part after 2 minutes, every
		// session's output complete); 10 x 256 KiB, which also stalled
		// before the fix, takes seconds.
		sessions, size = 10, 256<<10
	}
	fmt.Sscan(os.Getenv("SSHMESH_RECORDER_LOAD_SESSIONS"), &sessions)
	fmt.Sscan(os.Getenv("SSHMESH_RECORDER_LOAD_SIZE"), &size)
	// The bound is generous: this test is about completeness, and 50
	// streams on a loaded machine under the race detector are slow.
	r := newRig(t, rigOptions{onFailure: "fail-closed", handler: bulkHandler, bound: 2 * time.Minute})
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := fmt.Sprintf("%d #%02d", size, i)
			cl, err := sshmeshtest.Dial(t, r.laptop, r.srv, r.server, "ann")
			if err != nil {
				errs <- err
				return
			}
			sess, err := cl.NewSession()
			if err != nil {
				errs <- err
				return
			}
			// A session that never ends fails the test, with the logs,
			// instead of hanging it.
			stop := time.AfterFunc(4*time.Minute, func() { cl.Close() })
			defer stop.Stop()
			out, err := sess.Output(cmd)
			if err != nil || !bytes.Equal(out, bulkOutput(cmd, size)) {
				errs <- fmt.Errorf("session %d: %d bytes, %v", i, len(out), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	var files []string
	waitFor(t, "every recording to complete", func() bool {
		files = casts(t, r.recDir)
		if len(files) != sessions {
			return false
		}
		for _, f := range files {
			b, _ := os.ReadFile(strings.TrimSuffix(f, ".cast") + ".json")
			var m recorder.Meta
			if json.Unmarshal(b, &m) != nil || !m.Complete {
				return false
			}
		}
		return true
	})
	seen := map[string]bool{}
	for _, f := range files {
		b, _ := os.ReadFile(strings.TrimSuffix(f, ".cast") + ".json")
		var m recorder.Meta
		json.Unmarshal(b, &m)
		_, got := castOutput(t, f)
		if want := bulkOutput(m.Claim.Command, size); got != string(want) {
			t.Errorf("%s (%s): %d bytes recorded, want the session's %d", f, m.Claim.Command, len(got), len(want))
		}
		seen[m.Claim.Command] = true
	}
	if len(seen) != sessions {
		t.Errorf("%d distinct sessions recorded, want %d", len(seen), sessions)
	}
}
