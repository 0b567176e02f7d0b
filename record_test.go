package sshmesh_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/asciicast"
	"github.com/sshmesh/sshmesh/policy"
)

func recordPolicy(onFailure string) policy.Policy {
	return policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
		return policy.Decision{Action: policy.Accept, LocalUser: r.User, Record: true, OnRecordingFailure: onFailure}, nil
	})
}

// echoHandler echoes stdin to stdout and writes a line to stderr.
var echoHandler = sshmesh.HandlerFunc(func(s *sshmesh.Session) {
	io.WriteString(s.Stderr(), "to-stderr\n")
	io.Copy(s, s)
})

func readCast(t *testing.T, path string) (asciicast.Header, []asciicast.Event) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := asciicast.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var evs []asciicast.Event
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return r.Header, evs
		}
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
}

func TestRecording(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, &sshmesh.Server{Policy: recordPolicy(""), Handler: echoHandler, RecordDir: dir, RecordInput: true})
	sess, _ := ts.dial(t, "ann").NewSession()
	if err := sess.RequestPty("xterm", 30, 90, nil); err != nil {
		t.Fatal(err)
	}
	in, _ := sess.StdinPipe()
	out, _ := sess.StdoutPipe()
	sess.Shell()
	io.WriteString(in, "hello\n")
	buf := make([]byte, 6)
	io.ReadFull(out, buf)
	// With a reply, so the resize is recorded before stdin's EOF ends the session.
	if ok, err := sess.SendRequest("window-change", true, ssh.Marshal(struct{ Cols, Rows, W, H uint32 }{100, 40, 0, 0})); !ok || err != nil {
		t.Fatalf("window-change: %v %v", ok, err)
	}
	in.Close()
	sess.Wait()

	files, _ := filepath.Glob(filepath.Join(dir, "*.cast"))
	if len(files) != 1 {
		t.Fatalf("recordings: %v, want one", files)
	}
	st, _ := os.Stat(files[0])
	if st.Mode().Perm() != 0o600 {
		t.Errorf("recording mode %v", st.Mode())
	}
	h, evs := readCast(t, files[0])
	if h.Width != 90 || h.Height != 30 || h.Env["TERM"] != "xterm" {
		t.Errorf("header %+v", h)
	}
	var o, i strings.Builder
	resized := false
	last := 0.0
	for _, ev := range evs {
		if ev.Time < last {
			t.Errorf("time goes back: %v after %v", ev.Time, last)
		}
		last = ev.Time
		switch ev.Code {
		case "o":
			o.WriteString(ev.Data)
		case "i":
			i.WriteString(ev.Data)
		case "r":
			resized = resized || ev.Data == "100x40"
		}
	}
	if o.String() != "to-stderr\nhello\n" || i.String() != "hello\n" || !resized {
		t.Errorf("recorded output %q, input %q, resize %v", o.String(), i.String(), resized)
	}
}

func TestRecordingFailure(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "such", "dir")
	for _, tc := range []struct {
		onFailure string
		wantCode  int
	}{{"fail-closed", 254}, {"fail-open", 0}, {"", 0}} {
		ran := false
		ts := startServer(t, &sshmesh.Server{Policy: recordPolicy(tc.onFailure), RecordDir: missing,
			Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { ran = true })})
		sess, _ := ts.dial(t, "ann").NewSession()
		var stderr strings.Builder
		sess.Stderr = &stderr
		err := sess.Run("x")
		code := 0
		var ee *ssh.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitStatus()
		}
		if code != tc.wantCode || ran != (tc.wantCode == 0) {
			t.Errorf("%q: exit %d (handler ran: %v), want %d", tc.onFailure, code, ran, tc.wantCode)
		}
		if tc.wantCode == 254 && !strings.Contains(stderr.String(), "recording failed") {
			t.Errorf("%q: stderr %q", tc.onFailure, stderr.String())
		}
	}
}

// memorySink is a RecordingSink of the test's own.
type memorySink struct {
	mu     sync.Mutex
	info   sshmesh.RecordingInfo
	out    strings.Builder
	closed bool
}

func (m *memorySink) Output(p []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.out.Write(p)
	return nil
}
func (m *memorySink) Input([]byte) error    { return nil }
func (m *memorySink) Resize(int, int) error { return nil }
func (m *memorySink) Close() error          { m.mu.Lock(); defer m.mu.Unlock(); m.closed = true; return nil }

type memoryRecorder struct {
	mu    sync.Mutex
	sinks []*memorySink
	fail  error // OpenRecording's error, if any
}

func (r *memoryRecorder) OpenRecording(_ context.Context, info sshmesh.RecordingInfo) (sshmesh.RecordingSink, error) {
	if r.fail != nil {
		return nil, r.fail
	}
	s := &memorySink{info: info}
	r.mu.Lock()
	r.sinks = append(r.sinks, s)
	r.mu.Unlock()
	return s, nil
}

// TestRecorderOption: Server.Recorder gets every recorded session, with
// its metadata, instead of RecordDir; an open error follows the rule.
func TestRecorderOption(t *testing.T) {
	dir := t.TempDir()
	rec := &memoryRecorder{}
	ts := startServer(t, &sshmesh.Server{Policy: recordPolicy("fail-closed"), Handler: echoHandler, Recorder: rec, RecordDir: dir})
	sess, _ := ts.dial(t, "ann").NewSession()
	sess.Stdin = strings.NewReader("typed\n")
	out, err := sess.Output("echo-me")
	if err != nil || string(out) != "typed\n" {
		t.Fatalf("session: %q %v", out, err)
	}
	if len(rec.sinks) != 1 {
		t.Fatalf("%d recordings, want 1", len(rec.sinks))
	}
	s := rec.sinks[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out.String() != "to-stderr\ntyped\n" || !s.closed {
		t.Errorf("sink got %q (closed %v)", s.out.String(), s.closed)
	}
	if s.info.Kind != "exec" || s.info.Command != "echo-me" || s.info.LocalUser != "ann" || s.info.Session == "" || s.info.Fail == nil {
		t.Errorf("info %+v", s.info)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 0 {
		t.Errorf("RecordDir was written although Recorder is set: %v", files)
	}

	rec.fail = errors.New("sink unavailable")
	sess, _ = ts.dial(t, "ann").NewSession()
	if err := sess.Run("x"); err == nil {
		t.Error("a fail-closed session ran although its recording did not open")
	}
}

// TestRecordDirRefusesRecorders: a rule that names recorders is not
// quietly recorded on the host by the local directory.
func TestRecordDirRefusesRecorders(t *testing.T) {
	dir := t.TempDir()
	pol := policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
		return policy.Decision{Action: policy.Accept, LocalUser: r.User, Record: true, OnRecordingFailure: "fail-closed", Recorders: []string{"tag:recorder"}}, nil
	})
	ts := startServer(t, &sshmesh.Server{Policy: pol, Handler: echoHandler, RecordDir: dir})
	sess, _ := ts.dial(t, "ann").NewSession()
	err := sess.Run("x")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 254 {
		t.Errorf("session: %v, want exit 254", err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*")); len(files) != 0 {
		t.Errorf("recorded locally: %v", files)
	}
}
