package recorder_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/asciicast"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/recorder"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestDroppedSenderStreamEnds: when the recorder's policy no longer lets
// a node send (a reload), the node's stream in progress ends: the sender
// is told why, its fail-closed session ends with 254, and the recording
// is kept, marked incomplete with the reason. Recheck does it at once;
// without it, the check Serve runs every second does.
func TestDroppedSenderStreamEnds(t *testing.T) {
	for _, recheck := range []bool{true, false} {
		t.Run(fmt.Sprintf("recheck=%v", recheck), func(t *testing.T) {
			r := newRig(t, rigOptions{onFailure: "fail-closed", bound: 5 * time.Second})
			sess, in, out, stderr := r.session(t)
			io.WriteString(in, "before\n")
			buf := make([]byte, len("before\n"))
			if _, err := io.ReadFull(out, buf); err != nil {
				t.Fatal(err)
			}

			waitFor(t, "the recorder to store the output", func() bool {
				files := casts(t, r.recDir)
				if len(files) != 1 {
					return false
				}
				b, _ := os.ReadFile(files[0])
				return strings.Contains(string(b), "before")
			})

			// srv loses tag:server in the recorder's policy.
			dropped := strings.Replace(r.policySrc, `"tags": ["tag:server"]},`, `"owner": "nobody@example.com"},`, 1)
			doc, err := policy.Parse([]byte(dropped), "policy.hujson")
			if err != nil || dropped == r.policySrc {
				t.Fatalf("the test's policy edit: %v", err)
			}
			r.recDoc.Store(doc)
			if recheck {
				if n := r.rec.Recheck(); n != 1 {
					t.Errorf("Recheck ended %d streams, want 1", n)
				}
			}
			go io.Copy(io.Discard, out)
			ended := make(chan error, 1)
			go func() { ended <- sess.Wait() }()
			select {
			case err := <-ended:
				if code := exitStatus(err); code != 254 {
					t.Errorf("exit status %d (%v), want 254", code, err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the session still runs 60 s after its server was dropped from the recorder's senders")
			}
			if !strings.Contains(stderr.String(), "recording failed") {
				t.Errorf("stderr %q, want the recording failure", stderr.String())
			}
			if !strings.Contains(r.serverLog.String(), "may no longer send recordings here") {
				t.Errorf("the server log does not carry the recorder's reason:\n%s", r.serverLog.String())
			}
			meta := finalMeta(t, r.recDir, "")
			if meta.Complete || !strings.Contains(meta.Error, "may no longer send recordings here") || meta.Bytes == 0 {
				t.Errorf("meta: complete %v, %d bytes, error %q; want incomplete with the reason and the output before", meta.Complete, meta.Bytes, meta.Error)
			}
		})
	}
}

// finalMeta waits for the recording of session under dir ("": the only
// one) to end and returns its meta.
func finalMeta(t *testing.T, dir, session string) recorder.Meta {
	t.Helper()
	var meta recorder.Meta
	waitFor(t, "the recording's final meta", func() bool {
		var path string
		for _, f := range casts(t, dir) {
			if session == "" || filepath.Base(f) == session+".cast" {
				if path != "" {
					return false
				}
				path = f
			}
		}
		b, _ := os.ReadFile(strings.TrimSuffix(path, ".cast") + ".json")
		return path != "" && json.Unmarshal(b, &meta) == nil && !meta.Ended.IsZero()
	})
	return meta
}

// openStream dials the recorder from node and sends a start frame for
// session; it does not wait for the answer.
func openStream(t *testing.T, r *rig, from *sshmeshtest.Node, session string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", netip.AddrPortFrom(r.recNd.Addr, recorder.DefaultPort).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	st := recorder.Start{Version: 1, Session: session, Caller: "laptop", User: "ann", LocalUser: "root",
		Kind: "shell", Header: asciicast.Header{Width: 80, Height: 24}}
	if err := recorder.WriteFrameForTest(c, 'S', mustJSON(t, st)); err != nil {
		t.Fatal(err)
	}
	return c
}

// answer reads frames from c until one that is not an acknowledgement.
func answer(t *testing.T, c net.Conn) (byte, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		typ, p, err := recorder.ReadFrameForTest(c)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		if typ != 'K' {
			return typ, string(p)
		}
	}
}

// eventLines returns whole event lines of exactly n bytes (n >= 16).
func eventLines(n int) []byte {
	var b []byte
	for n-len(b) > 4096 {
		b = append(b, fmt.Sprintf("[0.1,\"o\",%q]\n", strings.Repeat("x", 2000))...)
	}
	pad := n - len(b) - len("[0.1,\"o\",\"\"]\n")
	return append(b, fmt.Sprintf("[0.1,\"o\",%q]\n", strings.Repeat("y", pad))...)
}

// TestClaimedFrameCostsNothing: frames that claim a megabyte each and send
// nothing hold none of the recorder's memory but a first step of 4 KiB
// each (and their place in the sender's pending budget): the live heap
// grows by far less than what they claim once the recorder has read
// their headers.
func TestClaimedFrameCostsNothing(t *testing.T) {
	const streams = 32
	// The idle timeout must outlast the test on a loaded machine: a claim
	// that times out is released, and the count below would never be met.
	r := newRig(t, rigOptions{maxPending: 1 << 30, idle: 10 * time.Minute})
	var conns []net.Conn
	for i := range streams {
		c := openStream(t, r, r.srv, fmt.Sprintf("claim-%d", i))
		if typ, p := answer(t, c); typ != 'A' {
			t.Fatalf("stream %d: %q %q, want accepted", i, typ, p)
		}
		conns = append(conns, c)
	}
	before := heapInUse()
	for _, c := range conns {
		if _, err := c.Write([]byte{'D', 0, 0x10, 0, 0}); err != nil { // a 1 MiB data frame begins
			t.Fatal(err)
		}
	}
	waitFor(t, "the recorder to read every frame header", func() bool {
		return recorder.PendingForTest(r.rec, r.srv.Key.Public()) == streams*recorder.MaxFrame
	})
	grown := heapInUse() - before
	t.Logf("the live heap grew by %d KiB", grown>>10)
	if grown > streams*recorder.MaxFrame/2 { // without the bound: more than all of it
		t.Errorf("the live heap grew by %d MiB for %d frames that claim 1 MiB and sent nothing", grown>>20, streams)
	}
}

// TestPendingBytesPerSender: a sender's frames in progress hold at most
// MaxPendingBytesPerSender of the recorder: its next frame waits until
// they are stored, and another sender's streams are not held up.
func TestPendingBytesPerSender(t *testing.T) {
	r := newRig(t, rigOptions{maxPending: recorder.MaxFrame, idle: 10 * time.Minute}) // no wait times out on a loaded machine
	a := openStream(t, r, r.srv, "holder")
	if typ, p := answer(t, a); typ != 'A' {
		t.Fatalf("first stream: %q %q, want accepted", typ, p)
	}
	frame := eventLines(recorder.MaxFrame)
	if _, err := a.Write([]byte{'D', 0, 0x10, 0, 0}); err != nil { // begins a 1 MiB frame: the whole budget
		t.Fatal(err)
	}
	waitFor(t, "the recorder to read the frame header", func() bool {
		return recorder.PendingForTest(r.rec, r.srv.Key.Public()) == recorder.MaxFrame
	})

	b := openStream(t, r, r.srv, "waiter") // its start frame waits for room
	other := openStream(t, r, r.mesh.Nodes[3], "other-sender")
	if typ, p := answer(t, other); typ != 'A' {
		t.Fatalf("another sender's stream: %q %q, want accepted at once", typ, p)
	}
	// The recorder answers other senders; srv's second stream is still
	// not answered a second later (no timing can make this fail wrongly:
	// a slow machine only lets it pass).
	b.SetReadDeadline(time.Now().Add(time.Second))
	if typ, p, err := recorder.ReadFrameForTest(b); err == nil {
		t.Fatalf("srv's second stream was answered %q %q while its first held the budget", typ, p)
	}
	if got := recorder.PendingForTest(r.rec, r.srv.Key.Public()); got != recorder.MaxFrame {
		t.Errorf("srv's pending bytes %d while its second stream waits, want %d", got, recorder.MaxFrame)
	}

	if _, err := a.Write(frame); err != nil { // the frame completes and is stored
		t.Fatal(err)
	}
	if typ, p := answer(t, b); typ != 'A' {
		t.Fatalf("the waiting stream: %q %q, want accepted once the frame was stored", typ, p)
	}
	recorder.WriteFrameForTest(a, 'E', nil)
	for {
		if _, _, err := recorder.ReadFrameForTest(a); err != nil {
			break
		}
	}
	if meta := finalMeta(t, r.recDir, "holder"); !meta.Complete || meta.Bytes != recorder.MaxFrame {
		t.Errorf("the first stream's meta: complete %v, %d bytes, error %q; want complete with its frame", meta.Complete, meta.Bytes, meta.Error)
	}
}

// heapInUse returns the live heap after two collections (the second
// frees what sync.Pools kept through the first).
func heapInUse() int {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int(ms.HeapAlloc)
}
