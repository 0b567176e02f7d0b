package recorder_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/recorder"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestStoredBeforeExit: a fail-closed session's exit status reaches the
// client only once the recorder has stored the whole recording. The
// recorder here syncs (and so acknowledges) only at the end of a stream,
// so a server that sent the status first would be caught with a
// recording not yet complete.
func TestStoredBeforeExit(t *testing.T) {
	r := newRig(t, rigOptions{onFailure: "fail-closed", handler: bulkHandler, sync: time.Hour})
	cl, err := sshmeshtest.Dial(t, r.laptop, r.srv, r.server, "ann")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		sess, err := cl.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		cmd := fmt.Sprintf("%d #%d", 200<<10, i)
		out, err := sess.Output(cmd)
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		// No waiting: the status came, so the recording is stored.
		var found bool
		for _, path := range casts(t, r.recDir) {
			if _, got := castOutput(t, path); got == string(out) {
				found = true
				var meta recorder.Meta
				b, _ := os.ReadFile(strings.TrimSuffix(path, ".cast") + ".json")
				if err := json.Unmarshal(b, &meta); err != nil || !meta.Complete {
					t.Errorf("session %d: the recording's meta is not complete yet: %s", i, b)
				}
			}
		}
		if !found || !bytes.Equal(out, bulkOutput(cmd, 200<<10)) {
			t.Fatalf("session %d: no recording holds its %d bytes of output when its status arrived", i, len(out))
		}
	}
}

// TestNoFinalAck: a recorder that takes a fail-closed session's stream
// but never acknowledges it makes the session end with 254 at its end
// (within the bound), with the failure on stderr, not with the handler's
// status.
func TestNoFinalAck(t *testing.T) {
	const bound = 2 * time.Second
	r := newRig(t, rigOptions{onFailure: "fail-closed", noServe: true, bound: bound, handler: bulkHandler})
	ln, err := r.recNd.Listen("tcp", fmt.Sprintf(":%d", recorder.DefaultPort))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if typ, _, err := recorder.ReadFrameForTest(c); err != nil || typ != 'S' {
					return
				}
				recorder.WriteFrameForTest(c, 'A', nil)
				for {
					typ, _, err := recorder.ReadFrameForTest(c)
					if err != nil {
						return
					}
					if typ == 'P' { // alive, but nothing stored
						recorder.WriteFrameForTest(c, 'K', make([]byte, 8))
					}
				}
			}()
		}
	}()
	cl, err := sshmeshtest.Dial(t, r.laptop, r.srv, r.server, "ann")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	start := time.Now()
	_, err = sess.Output("100")
	if code := exitStatus(err); code != 254 {
		t.Fatalf("exit status %d (%v), want 254", code, err)
	}
	if !strings.Contains(stderr.String(), "recording failed") {
		t.Errorf("stderr %q, want the recording failure", stderr.String())
	}
	if d := time.Since(start); d > bound+30*time.Second {
		t.Errorf("the session ended %s after it started, bound %s", d, bound)
	}
	if !strings.Contains(r.serverLog.String(), "recording failed at its end") {
		t.Errorf("server log does not say why:\n%s", r.serverLog.String())
	}
}

// TestNothingSentAfterClosing: output written while a fail-closed
// session's recording is closing (the handler goes on writing after Exit
// began) reaches the client only if the recording took it: whatever the
// client got, the recording holds, in order.
func TestNothingSentAfterClosing(t *testing.T) {
	chunk := bytes.Repeat([]byte("w"), 1<<10)
	h := sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				if _, err := s.Write(append(fmt.Appendf(nil, "%08d", i), chunk...)); err != nil {
					return
				}
			}
		}()
		time.Sleep(50 * time.Millisecond)
		s.Exit(0)
		<-done
	})
	r := newRig(t, rigOptions{onFailure: "fail-closed", handler: h, sync: time.Hour})
	cl, err := sshmeshtest.Dial(t, r.laptop, r.srv, r.server, "ann")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		sess, err := cl.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		out, err := sess.Output(fmt.Sprintf("run %d", i))
		if err != nil || len(out) == 0 {
			t.Fatalf("session %d: %d bytes, %v", i, len(out), err)
		}
		var held bool
		for _, path := range casts(t, r.recDir) {
			if _, got := castOutput(t, path); strings.HasPrefix(got, string(out)) {
				held = true
			}
		}
		if !held {
			t.Fatalf("session %d: the client got %d bytes that no recording holds", i, len(out))
		}
	}
}
