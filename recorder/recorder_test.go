package recorder_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/asciicast"
	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/recorder"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// rig is an in-process mesh: a client laptop, an SSH server whose rule
// records to tag:recorder, and a recorder node.
type rig struct {
	mesh               *sshmeshtest.Mesh
	laptop, srv, recNd *sshmeshtest.Node
	doc                *policy.Document
	policySrc          string
	recDoc             atomic.Pointer[policy.Document] // the recorder's Identify names nodes by it
	server             *sshmesh.Server
	rec                *recorder.Server
	recDir, localDir   string
	serverLog, recLog  *testkit.Buffer
}

type rigOptions struct {
	onFailure  string        // the rule's onRecordingFailure
	senders    []string      // the recorder's Senders; nil means tag:server
	noServe    bool          // the recorder node runs no recorder
	process    bool          // the recorder runs in a process of its own
	bound      time.Duration // the client's AckTimeout
	sync       time.Duration // the recorder's SyncInterval; 0 means 200 ms
	maxStreams int           // the recorder's MaxStreamsPerSender
	maxCaller  int           // the recorder's MaxStreamsPerCaller
	maxBytes   int64         // the recorder's MaxRecordingBytes
	maxPending int           // the recorder's MaxPendingBytesPerSender
	idle       time.Duration // the recorder's IdleTimeout
	handler    sshmesh.Handler
	recording  string // the rule's recording options; "" means record to tag:recorder
}

func newRig(t testing.TB, o rigOptions) *rig {
	t.Helper()
	m := sshmeshtest.NewMesh(t, 4)
	r := &rig{mesh: m, laptop: m.Nodes[0], srv: m.Nodes[1], recNd: m.Nodes[2], recDir: t.TempDir(), localDir: t.TempDir(),
		serverLog: &testkit.Buffer{}, recLog: &testkit.Buffer{}}
	recording := o.recording
	if recording == "" {
		recording = `"record": true, "recorders": ["tag:recorder"]`
	}
	fail := ""
	if o.onFailure != "" {
		fail = fmt.Sprintf(`, "onRecordingFailure": %q`, o.onFailure)
	}
	policySrc := fmt.Sprintf(`{
	  "nodes": {
	    "laptop": {"key": %q, "owner": "ann@example.com"},
	    "srv":    {"key": %q, "tags": ["tag:server"]},
	    "rec":    {"key": %q, "tags": ["tag:recorder"]},
	    "other":  {"key": %q, "tags": ["tag:server"]},
	  },
	  "tagOwners": {"tag:server": ["ann@example.com"], "tag:recorder": ["ann@example.com"]},
	  "ssh": [{"action": "accept", "src": ["ann@example.com"], "dst": ["tag:server"], "users": ["*"],
	           %s, "message": "recording is required here"%s}],
	}`, m.Nodes[0].Key.Public(), m.Nodes[1].Key.Public(), m.Nodes[2].Key.Public(), m.Nodes[3].Key.Public(), recording, fail)
	doc, err := policy.Parse([]byte(policySrc), "policy.hujson")
	if err != nil {
		t.Fatal(err)
	}
	r.doc, r.policySrc = doc, policySrc
	r.recDoc.Store(doc)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s\nrecorder log:\n%s", tail(r.serverLog.String(), 400), tail(r.recLog.String(), 100))
		}
	})
	if o.process {
		startRecorderProcess(t, r, policySrc)
	} else if !o.noServe {
		senders := o.senders
		if senders == nil {
			senders = []string{"tag:server"}
		}
		sync := o.sync
		if sync == 0 {
			sync = 200 * time.Millisecond
		}
		identify := func(k meshkey.Public) (policy.Identity, bool) { return r.recDoc.Load().Node(k) }
		r.rec = &recorder.Server{Dir: r.recDir, Identify: identify, Senders: senders, Logger: r.recLog.Logger(), SyncInterval: sync,
			MaxStreamsPerSender: o.maxStreams, MaxStreamsPerCaller: o.maxCaller, MaxRecordingBytes: o.maxBytes,
			MaxPendingBytesPerSender: o.maxPending, IdleTimeout: o.idle}
		ln, err := r.recNd.Listen("tcp", fmt.Sprintf(":%d", recorder.DefaultPort))
		if err != nil {
			t.Fatal(err)
		}
		go r.rec.Serve(ln)
		t.Cleanup(func() { r.rec.Close() })
	}
	h := o.handler
	if h == nil {
		h = sshmesh.HandlerFunc(func(s *sshmesh.Session) { io.Copy(s, s) })
	}
	r.server = &sshmesh.Server{Policy: doc, Handler: h, Logger: r.serverLog.Logger(), Recorder: &recorder.Client{
		Dial:       r.srv.Dial,
		Resolve:    recorder.MeshResolver(doc.NodesNamed, r.srv.Peer, recorder.DefaultPort),
		Local:      sshmesh.DirRecorder{Dir: r.localDir},
		AckTimeout: o.bound,
	}}
	sshmeshtest.Serve(t, r.srv, r.server)
	return r
}

// session starts a shell session as ann with stdin and stdout pipes.
func (r *rig) session(t *testing.T) (*ssh.Session, io.WriteCloser, io.Reader, *bytes.Buffer) {
	t.Helper()
	cl, err := sshmeshtest.Dial(t, r.laptop, r.srv, r.server, "ann")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	in, _ := sess.StdinPipe()
	out, _ := sess.StdoutPipe()
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	return sess, in, out, &stderr
}

// casts returns the recordings under dir.
func casts(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".cast") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// castOutput returns the concatenated output events of a recording.
func castOutput(t *testing.T, path string) (asciicast.Header, string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := asciicast.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return rd.Header, b.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Code == asciicast.Output {
			b.WriteString(ev.Data)
		}
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStreamedRecording(t *testing.T) {
	r := newRig(t, rigOptions{onFailure: "fail-closed"})
	sess, in, out, _ := r.session(t)
	io.WriteString(in, "first line\n")
	buf := make([]byte, len("first line\n"))
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatal(err)
	}
	// While the session runs, the recorder has the output.
	var path string
	waitFor(t, "the recording on the recorder", func() bool {
		files := casts(t, r.recDir)
		if len(files) != 1 {
			return false
		}
		path = files[0]
		_, got := castOutput(t, path)
		return got == "first line\n"
	})
	want := "first line\n"
	for i := range 200 {
		line := fmt.Sprintf("line %d: ünïcödé and \x1b[1mescapes\x1b[0m\r\n", i)
		io.WriteString(in, line)
		want += line
	}
	in.Close()
	got, _ := io.ReadAll(out)
	if err := sess.Wait(); err != nil {
		t.Fatalf("session: %v", err)
	}
	if "first line\n"+string(got) != want {
		t.Fatalf("the client got %d bytes, want %d", len(got)+11, len(want))
	}
	// The file is under the sender's node name and the recorder's date.
	rel, _ := filepath.Rel(r.recDir, path)
	if parts := strings.Split(rel, string(filepath.Separator)); len(parts) != 3 || parts[0] != "srv" || parts[1] != time.Now().UTC().Format("2006-01-02") {
		t.Errorf("recording at %s, want srv/<today>/<session>.cast", rel)
	}
	waitFor(t, "the recording to complete", func() bool {
		b, _ := os.ReadFile(strings.TrimSuffix(path, ".cast") + ".json")
		var m recorder.Meta
		return json.Unmarshal(b, &m) == nil && m.Complete
	})
	h, rec := castOutput(t, path)
	if rec != want {
		t.Errorf("the recording's output differs from the session's:\n got %q\nwant %q", rec, want)
	}
	if !strings.Contains(h.Title, "laptop as ann") {
		t.Errorf("header title %q", h.Title)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("recording mode %v, want 0600", st.Mode().Perm())
	}
	if local := casts(t, r.localDir); len(local) != 0 {
		t.Errorf("the server kept a local copy: %v", local)
	}
}

// exitStatus returns the session's exit status (-1 without one).
func exitStatus(err error) int {
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus()
	}
	if err == nil {
		return 0
	}
	return -1
}

func TestFailClosedRecorderDown(t *testing.T) {
	r := newRig(t, rigOptions{onFailure: "fail-closed", noServe: true, bound: 3 * time.Second})
	sess, in, out, stderr := r.session(t)
	io.WriteString(in, "must not run\n")
	got, _ := io.ReadAll(out)
	err := sess.Wait()
	if code := exitStatus(err); code != 254 {
		t.Fatalf("exit status %d (%v), want 254", code, err)
	}
	if len(got) != 0 {
		t.Errorf("the session ran unrecorded: %q", got)
	}
	if !strings.Contains(stderr.String(), "recording is required here") {
		t.Errorf("stderr %q, want the rule's message", stderr.String())
	}
	if !strings.Contains(r.serverLog.String(), "no recorder accepted the session") {
		t.Errorf("server log does not say why:\n%s", r.serverLog.String())
	}
}

func TestFailClosedRecorderKilled(t *testing.T) {
	const bound = 3 * time.Second
	r := newRig(t, rigOptions{onFailure: "fail-closed", bound: bound})
	sess, in, out, stderr := r.session(t)
	io.WriteString(in, "recorded\n")
	buf := make([]byte, len("recorded\n"))
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatal(err)
	}
	// The recorder's node disappears from the mesh, as when its process is
	// killed: no RST, no FIN, only silence.
	r.recNd.Close()
	killed := time.Now()
	go io.Copy(io.Discard, out)
	err := sess.Wait()
	if code := exitStatus(err); code != 254 {
		t.Fatalf("exit status %d (%v), want 254", code, err)
	}
	// The session ends about one bound after the silence began; the limit
	// here is generous for a loaded machine.
	if d := time.Since(killed); d > bound+30*time.Second {
		t.Errorf("the session ended %s after the recorder went away, bound %s", d, bound)
	}
	if !strings.Contains(stderr.String(), "recording failed") {
		t.Errorf("stderr %q, want the recording failure", stderr.String())
	}
	in.Close()
}

func TestFailOpenContinues(t *testing.T) {
	r := newRig(t, rigOptions{onFailure: "fail-open", bound: 2 * time.Second})
	sess, in, out, _ := r.session(t)
	io.WriteString(in, "one\n")
	buf := make([]byte, 4)
	io.ReadFull(out, buf)
	r.recNd.Close()
	waitFor(t, "the server to log the failure", func() bool {
		return strings.Contains(r.serverLog.String(), "session continues unrecorded")
	})
	io.WriteString(in, "two\n")
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "two\n" {
		t.Fatalf("after the recorder went away: %q %v", buf, err)
	}
	in.Close()
	if err := sess.Wait(); err != nil {
		t.Fatalf("session: %v", err)
	}
}

func TestSenderNotAllowed(t *testing.T) {
	r := newRig(t, rigOptions{onFailure: "fail-closed", senders: []string{"other"}})
	sess, _, out, _ := r.session(t)
	io.ReadAll(out)
	if code := exitStatus(sess.Wait()); code != 254 {
		t.Fatalf("exit status %d, want 254", code)
	}
	if files := casts(t, r.recDir); len(files) != 0 {
		t.Errorf("the recorder stored %v from a node not allowed to send", files)
	}
	if !strings.Contains(r.recLog.String(), "the node may not send recordings") {
		t.Errorf("recorder log:\n%s", r.recLog.String())
	}
}

// TestClaimedIdentity: a sender that says it is another node, and names
// another caller, is stored under its own mesh identity.
func TestClaimedIdentity(t *testing.T) {
	r := newRig(t, rigOptions{senders: []string{"tag:server"}})
	other := r.mesh.Nodes[3] // allowed (tag:server), but not srv
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := other.Dial(ctx, "tcp", netip.AddrPortFrom(r.recNd.Addr, recorder.DefaultPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := recorder.Start{Version: 1, Session: "forged-1", Node: "srv", Caller: "laptop", User: "ann", LocalUser: "root",
		Kind: "shell", Header: asciicast.Header{Width: 80, Height: 24}}
	if err := recorder.WriteFrameForTest(c, 'S', mustJSON(t, st)); err != nil {
		t.Fatal(err)
	}
	if typ, p, err := recorder.ReadFrameForTest(c); err != nil || typ != 'A' {
		t.Fatalf("answer %q %q %v, want accepted", typ, p, err)
	}
	recorder.WriteFrameForTest(c, 'D', []byte(`[0.1, "o", "hi"]`+"\n"))
	recorder.WriteFrameForTest(c, 'E', nil)
	for {
		if _, _, err := recorder.ReadFrameForTest(c); err != nil {
			break
		}
	}
	files := casts(t, r.recDir)
	if len(files) != 1 || filepath.Base(filepath.Dir(filepath.Dir(files[0]))) != "other" {
		t.Fatalf("recordings %v, want one under other/", files)
	}
	// A bad stream is refused.
	c2, err := other.Dial(ctx, "tcp", netip.AddrPortFrom(r.recNd.Addr, recorder.DefaultPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	st.Session = "../../etc/passwd"
	recorder.WriteFrameForTest(c2, 'S', mustJSON(t, st))
	if typ, p, _ := recorder.ReadFrameForTest(c2); typ != 'N' || !strings.Contains(string(p), "session") {
		t.Errorf("answer to a bad session id: %q %q, want refused", typ, p)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
