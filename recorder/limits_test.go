package recorder_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/asciicast"
	"github.com/sshmesh/sshmesh/recorder"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestStreamsPerSender: a sender streams at most MaxStreamsPerSender
// recordings at once; one more is refused with a frame that says why (a
// fail-closed session then does not start), and a stream that ends makes
// room again.
func TestStreamsPerSender(t *testing.T) {
	r := newRig(t, rigOptions{onFailure: "fail-closed", maxStreams: 1, bound: 5 * time.Second})
	first, in, out, _ := r.session(t)
	io.WriteString(in, "one\n")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatal(err)
	}

	second, _, out2, stderr := r.session(t)
	io.ReadAll(out2)
	if code := exitStatus(second.Wait()); code != 254 {
		t.Fatalf("a second stream at once: exit status %d, want 254 (refused)", code)
	}
	if !strings.Contains(stderr.String(), "recording is required here") {
		t.Errorf("stderr %q, want the rule's message", stderr.String())
	}
	if !strings.Contains(r.serverLog.String(), "already streams 1 recordings here, the recorder's limit") {
		t.Errorf("the server log does not carry the recorder's reason:\n%s", r.serverLog.String())
	}
	if !strings.Contains(r.recLog.String(), "the node streams as many recordings as it may") {
		t.Errorf("the recorder log does not say why:\n%s", r.recLog.String())
	}

	in.Close()
	if err := first.Wait(); err != nil {
		t.Fatalf("first session: %v", err)
	}
	third, in3, out3, _ := r.session(t)
	io.WriteString(in3, "three\n")
	in3.Close()
	if got, _ := io.ReadAll(out3); string(got) != "three\n" {
		t.Errorf("after the first stream ended: %q", got)
	}
	if err := third.Wait(); err != nil {
		t.Errorf("third session: %v", err)
	}
}

// TestRecordingSizeLimit: a recording that goes over MaxRecordingBytes is
// refused from there on: the fail-closed session ends with 254, and the
// recorder keeps what it stored, marked incomplete with the reason.
func TestRecordingSizeLimit(t *testing.T) {
	const limit = 64 << 10
	r := newRig(t, rigOptions{onFailure: "fail-closed", maxBytes: limit, handler: bulkHandler, bound: 5 * time.Second})
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
	out, err := sess.Output("1048576")
	if code := exitStatus(err); code != 254 {
		t.Fatalf("exit status %d (%v), want 254", code, err)
	}
	_ = out // output is not held back until acknowledged (docs/recorder.md): it may all have come
	if !strings.Contains(r.serverLog.String(), "over the recorder's limit") {
		t.Errorf("the server log does not carry the recorder's reason:\n%s", r.serverLog.String())
	}
	if !strings.Contains(stderr.String(), "recording failed") {
		t.Errorf("stderr %q, want the recording failure", stderr.String())
	}
	files := casts(t, r.recDir)
	if len(files) != 1 {
		t.Fatalf("%d recordings, want 1", len(files))
	}
	var meta recorder.Meta
	waitFor(t, "the recording's final meta", func() bool {
		b, _ := os.ReadFile(strings.TrimSuffix(files[0], ".cast") + ".json")
		return json.Unmarshal(b, &meta) == nil && !meta.Ended.IsZero()
	})
	if meta.Complete || !strings.Contains(meta.Error, "over the recorder's limit") || meta.Bytes > limit {
		t.Errorf("meta: complete %v, %d bytes, error %q", meta.Complete, meta.Bytes, meta.Error)
	}
}

// TestStreamsPerCaller: of one sender's streams, at most
// MaxStreamsPerCaller are of one caller at once, so one user of a server
// cannot take all of its streams: another caller's stream is still
// accepted, and the refused caller's next stream is once one of its own
// ends.
func TestStreamsPerCaller(t *testing.T) {
	r := newRig(t, rigOptions{maxStreams: 10, maxCaller: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := func(caller string, i int) (answer byte, reason string, end func()) {
		t.Helper()
		c, err := r.srv.Dial(ctx, "tcp", netip.AddrPortFrom(r.recNd.Addr, recorder.DefaultPort).String())
		if err != nil {
			t.Fatal(err)
		}
		st := recorder.Start{Version: 1, Session: fmt.Sprintf("%s-%d", caller, i), Caller: caller, User: "ann", LocalUser: "root",
			Kind: "shell", Header: asciicast.Header{Width: 80, Height: 24}}
		if err := recorder.WriteFrameForTest(c, 'S', mustJSON(t, st)); err != nil {
			t.Fatal(err)
		}
		typ, p, err := recorder.ReadFrameForTest(c)
		if err != nil {
			t.Fatalf("%s's stream %d: %v", caller, i, err)
		}
		return typ, string(p), func() {
			recorder.WriteFrameForTest(c, 'E', nil)
			for {
				if _, _, err := recorder.ReadFrameForTest(c); err != nil {
					break
				}
			}
			c.Close()
		}
	}
	var ends []func()
	for i := range 2 {
		typ, p, end := start("laptop", i)
		if typ != 'A' {
			t.Fatalf("laptop's stream %d: %q %q, want accepted", i, typ, p)
		}
		ends = append(ends, end)
	}
	if typ, p, end := start("laptop", 2); typ != 'N' || !strings.Contains(p, `the caller "laptop" already has 2 recordings streaming here`) {
		t.Errorf("laptop's third stream: %q %q, want refused with the reason", typ, p)
		end()
	}
	typ, p, end := start("desk", 0)
	if typ != 'A' {
		t.Fatalf("another caller's stream beside them: %q %q, want accepted", typ, p)
	}
	end()
	ends[0]()
	if typ, p, end := start("laptop", 3); typ != 'A' {
		t.Errorf("laptop's stream after one of its own ended: %q %q, want accepted", typ, p)
	} else {
		end()
	}
	ends[1]()
}
