package sshmesh

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sshmesh/sshmesh/asciicast"
	"github.com/sshmesh/sshmesh/session"
)

// Session recording: where the conn's rule says "record": true, every
// session of the conn (shell, exec, subsystem; PTY or not) is written as an
// asciicast v2 file. The tap is in Session's Read, Write and Stderr, below
// any Handler, so no handler and no client request can bypass it.

// recorder writes one session's recording. A nil *recorder records nothing.
type recorder struct {
	w           RecordingSink
	where       string // for the log: the Recorder's type or directory
	recordIn    bool
	failClosed  bool
	failed      atomic.Bool // stop recording (failed, or the session ended)
	failedWrite atomic.Bool // a write failed (not just the end)
	ended       atomic.Bool // close began: nothing more is recorded
	closeOnce   sync.Once
	closeErr    error // the sink's Close error, when the recording had not failed before
}

// startRecording opens the session's recording when its rule asks for
// one. It reports whether the session may run: on failure a fail-closed
// rule refuses the session (message, exit status 254); a fail-open rule
// lets it run unrecorded and logs that.
func (s *Session) startRecording() bool {
	c := s.conn
	d := c.decision
	if !d.Record {
		return true
	}
	r, err := s.openRecording()
	if err == nil {
		s.rec = r
		return true
	}
	if d.OnRecordingFailure == "fail-closed" {
		s.log().Error("session refused: recording failed and the rule is fail-closed", "rule", d.Rule, "err", err)
		if d.Message != "" {
			s.message(d.Message)
		}
		s.message("this session must be recorded, and recording failed; session refused")
		s.Exit(254)
		return false
	}
	s.log().Warn("session unrecorded: recording failed and the rule is fail-open", "rule", d.Rule, "err", err)
	return true
}

func (s *Session) openRecording() (*recorder, error) {
	srv := s.conn.srv
	h := asciicast.Header{Width: 80, Height: 24, Env: map[string]string{}}
	if s.pty != nil {
		if w := s.pty.Window; w.Cols > 0 && w.Rows > 0 { // ssh -tt without a terminal asks for 0x0
			h.Width, h.Height = int(w.Cols), int(w.Rows)
		}
		h.Env["TERM"] = s.pty.Term
	}
	if u, err := session.LookupUser(s.conn.decision.LocalUser); err == nil {
		h.Env["SHELL"] = u.Shell
	}
	h.Title = fmt.Sprintf("%s as %s (%s)", s.conn.identity.Name(), s.conn.decision.LocalUser, s.kind)
	h.Timestamp = s.started.Unix()
	rec := srv.Recorder
	where := fmt.Sprintf("%T", rec)
	if rec == nil {
		rec = DirRecorder{Dir: srv.RecordDir}
		where = srv.RecordDir
	}
	r := &recorder{where: where, recordIn: srv.RecordInput, failClosed: s.conn.decision.OnRecordingFailure == "fail-closed"}
	info := RecordingInfo{
		Session: s.id, Identity: s.conn.identity, LocalUser: s.conn.decision.LocalUser,
		Kind: s.kind, Command: s.raw, Start: s.started, Header: h, Input: srv.RecordInput,
		Decision: s.conn.decision,
		Fail:     func(err error) { r.check(s, err) },
	}
	w, err := rec.OpenRecording(s.ctx, info)
	if err != nil {
		return nil, err
	}
	r.w = w
	return r, nil
}

// output records p before it is sent, and reports whether it may be
// sent: false once a fail-closed recording has failed.
func (r *recorder) output(s *Session, p []byte) bool {
	if r == nil {
		return true
	}
	if len(p) > 0 && !r.failed.Load() {
		r.check(s, r.w.Output(p))
	}
	// Once a fail-closed recording is closing, what it did not take is
	// not sent: it would reach the client unrecorded.
	return !r.mustEnd() && !(r.failClosed && r.ended.Load())
}

// mustEnd reports whether the session must end because its fail-closed
// recording failed.
func (r *recorder) mustEnd() bool { return r != nil && r.failClosed && r.failedWrite.Load() }

func (r *recorder) input(s *Session, p []byte) {
	if r != nil && r.recordIn && !r.failed.Load() {
		r.check(s, r.w.Input(p))
	}
}

func (r *recorder) resize(s *Session, w Window) {
	if r != nil && !r.failed.Load() {
		r.check(s, r.w.Resize(int(w.Cols), int(w.Rows)))
	}
}

// check handles a failed write: a fail-closed rule ends the session.
func (r *recorder) check(s *Session, err error) {
	if err == nil || r.failed.Swap(true) {
		return
	}
	r.failedWrite.Store(true)
	if r.failClosed {
		s.log().Error("session ended: recording failed and the rule is fail-closed", "recorder", r.where, "err", err)
		go s.Exit(254) // also when the handler never writes again
		return
	}
	s.log().Warn("session continues unrecorded: recording failed and the rule is fail-open", "recorder", r.where, "err", err)
}

// close closes the recording once, and returns the sink's error if the
// recording had not failed before.
func (r *recorder) close(s *Session) error {
	if r == nil {
		return nil
	}
	r.closeOnce.Do(func() {
		r.ended.Store(true)
		// Late events (a window change racing the end) are dropped quietly.
		failedBefore := r.failed.Swap(true)
		err := r.w.Close()
		if failedBefore || err == nil {
			return
		}
		r.closeErr = err
		s.conn.srv.logger().Warn("recording not saved cleanly", "session", s.id, "recorder", r.where, "err", err)
	})
	return r.closeErr
}

// endBeforeExit closes a fail-closed recording before the session reports
// its end, so that the session's last output is stored (a remote
// recorder has acknowledged it, within its bound) before the client
// learns the session ended. It reports whether the session must end
// with 254: its fail-closed recording failed, or did not store the end.
func (r *recorder) endBeforeExit(s *Session) bool {
	if r == nil || !r.failClosed {
		return false
	}
	if r.mustEnd() {
		r.close(s)
		return true
	}
	if err := r.close(s); err != nil {
		s.log().Error("session ends with 254: recording failed at its end and the rule is fail-closed", "recorder", r.where, "err", err)
		return true
	}
	return false
}
