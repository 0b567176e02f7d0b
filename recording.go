package sshmesh

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/sshmesh/sshmesh/asciicast"
	"github.com/sshmesh/sshmesh/policy"
)

// Recorder opens the recordings of sessions whose rule says "record": true.
// [DirRecorder] writes them to a local directory (Server.RecordDir); the
// client of package recorder streams them to `sshmesh recorder` nodes on
// the mesh; an embedder may send them anywhere else.
//
// The session runs only once OpenRecording returned a sink (or, on a
// fail-open rule, failed). Every byte the session sends the client is given
// to the sink's Output before it is sent; a sink error, or a call of
// RecordingInfo.Fail, makes a fail-closed session end with status 254.
type Recorder interface {
	OpenRecording(ctx context.Context, info RecordingInfo) (RecordingSink, error)
}

// RecordingSink takes one session's events, in order. Its methods are
// called from the session's goroutines and must be safe for concurrent
// use; an error means the recording failed (the session then follows its
// rule's onRecordingFailure). *asciicast.Writer is one.
type RecordingSink interface {
	Output(p []byte) error       // bytes sent to the client (stdout and stderr)
	Input(p []byte) error        // bytes the client typed (only with Server.RecordInput)
	Resize(cols, rows int) error // a window change
	Close() error                // the session ended: store what is left
}

// RecordingInfo is what the server knows about a session when its
// recording opens.
type RecordingInfo struct {
	Session   string           // the session id (SSHMESH_SESSION_ID)
	Identity  Identity         // who is logged in (mesh identity, login name)
	LocalUser string           // the account the session runs as
	Kind      string           // "shell", "exec" or "subsystem"
	Command   string           // the exec command or subsystem name, "" for a shell
	Start     time.Time        // when the session started
	Header    asciicast.Header // the recording's header: size, TERM, SHELL, title
	Input     bool             // whether Input events will come (Server.RecordInput)
	Decision  policy.Decision  // the decision that let the conn in (Recorders, OnRecordingFailure)

	// Fail is how a sink reports a failure that happens between writes (a
	// remote recorder that stopped acknowledging): the session then
	// follows its rule as if a write had failed. Safe to call more than
	// once and from any goroutine.
	Fail func(error)
}

// DirRecorder writes each recording to Dir as an asciicast v2 file named by
// session id (mode 0600, fsynced when the session ends): what
// Server.RecordDir does when Server.Recorder is nil.
type DirRecorder struct {
	Dir string
}

// OpenRecording creates Dir/<session>.cast. A rule that names recorders
// ("recorders" in the policy) is refused: it asks for the recording to
// leave the host, and a local directory does not do that.
func (d DirRecorder) OpenRecording(_ context.Context, info RecordingInfo) (RecordingSink, error) {
	if len(info.Decision.Recorders) > 0 {
		return nil, errors.New("the rule names recorders, and the server has no Recorder to stream to them (Server.Recorder; sshmesh serve streams to them itself)")
	}
	if d.Dir == "" {
		return nil, errors.New("the server has no recording directory (Server.RecordDir, serve --record)")
	}
	return asciicast.Create(filepath.Join(d.Dir, info.Session+".cast"), info.Header)
}
