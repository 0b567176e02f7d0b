package sshmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/session"
)

// Identity is who is logged in: the caller's mesh identity (key, and the
// node name, owner and tags when the policy knows them), its mesh address
// and the login name it asked for.
type Identity struct {
	policy.Identity
	Addr netip.AddrPort // the caller's mesh address and port
	User string         // the login name the client asked for (policy.Request.User)
}

// Window is a terminal size: session.Window, one type for the server and
// the session layer. A window of 0×0 means the client does not know its
// size (ssh -tt without a terminal asks for one): the default handler
// passes that to the PTY as sshd does, a recording then starts at 80×24,
// and a handler of its own should treat 0 as unknown.
type Window = session.Window

// Pty is what the client asked for with its pty-req: its TERM, the initial
// Window and the RFC 4254 terminal modes exactly as the client encoded
// them (session.ParseModes decodes them). It is session.Pty, one type for
// the server and the session layer.
type Pty = session.Pty

// Signal is an SSH signal name, without "SIG": "TERM", "INT", "HUP", ...
type Signal string

// Session is one SSH session channel, as a Handler sees it (package
// session, by contrast, is the OS side: the processes a login runs). It
// reads the client's stdin
// ([Session.Read]) and writes its stdout ([Session.Write]); everything else
// the client asked for is here too. Methods are safe for concurrent use.
type Session struct {
	ch       ssh.Channel
	conn     *serverConn
	id       string             // conn id-N; also SSHMESH_SESSION_ID
	ctx      context.Context    // Context: life, and Shutdown
	cancel   context.CancelFunc // cancels ctx (Shutdown begins)
	life     context.Context    // done when the session ends
	end      context.CancelFunc // ends life (and so ctx)
	env      []string
	pty      *Pty
	kind     string // "shell", "exec" or "subsystem"
	raw      string // the exec command or the subsystem name
	windows  chan Window
	signals  chan Signal
	breaks   chan time.Duration
	exitOnce sync.Once
	exitErr  error
	// extraEnv is added to a login session's environment by the server
	// (not subject to acceptEnv), e.g. SSH_AUTH_SOCK.
	extraEnv []string

	started time.Time // when the handler started (server clock); written under conn.mu
	// startedAt is when the handler started, in unix nanos of the real
	// clock, stored once kind, raw and pty are final (Server.Conns).
	startedAt atomic.Int64
	bytesIn   atomic.Int64
	bytesOut  atomic.Int64
	rec       *recorder // nil unless the rule records
	stderr    io.Writer
	// x/crypto's channel allows one writer per stream and no CloseWrite
	// during a write: outMu and errMu serialize stdout and stderr.
	outMu, errMu sync.Mutex
	ending       ending // how the session ended, for the audit log
	// outClosed is set when the client said it reads no more output
	// (eow@openssh.com); Write fails from then on.
	outClosed atomic.Bool
}

// Read reads the client's stdin. It returns io.EOF when the client sends EOF.
func (s *Session) Read(p []byte) (int, error) {
	n, err := s.ch.Read(p)
	if n > 0 {
		s.conn.touch()
		s.bytesIn.Add(int64(n))
		s.rec.input(s, p[:n])
	}
	return n, err
}

// Write writes to the client's stdout. Once the client has said that it
// reads no more of it (its own stdout closed, [ErrOutputClosed]), Write
// fails, as a write to a closed pipe does.
func (s *Session) Write(p []byte) (int, error) {
	if s.outClosed.Load() {
		return 0, ErrOutputClosed
	}
	s.outMu.Lock()
	defer s.outMu.Unlock()
	s.conn.touch()
	if !s.rec.output(s, p) {
		return 0, errUnrecorded
	}
	n, err := s.ch.Write(p)
	s.bytesOut.Add(int64(n))
	return n, err
}

// ErrOutputClosed is what [Session.Write] returns once the client has sent
// eow@openssh.com: whatever reads the session's output on the client side
// has gone (`ssh host producer | head -1`). The default [LoginHandler]
// then closes the pipe from the command's stdout, so the command gets
// SIGPIPE, as under sshd.
//
// OpenSSH's client sends eow@openssh.com only to servers whose version
// string starts with "OpenSSH" (SSH_NEW_OPENSSH in its compat.c), which
// this server's does not: it names itself, so that OpenSSH's bug
// workarounds, scanners and audits are not misled. Against it an OpenSSH
// client whose reader has gone keeps reading and discarding the output
// until the command ends, and nothing it sends says so (it sends no EOF:
// EOF on the session is the end of its stdin, which it still has).
var ErrOutputClosed = errors.New("sshmesh: the client reads no more output (eow@openssh.com)")

// errUnrecorded is what writes return once a session that must be
// recorded could not be: nothing more reaches the client unrecorded.
var errUnrecorded = errors.New("sshmesh: session must be recorded, and recording failed")

// Stderr returns a writer to the client's stderr (SSH extended data).
func (s *Session) Stderr() io.Writer { return s.stderr }

// stderrWriter counts and records what goes to the client's stderr.
type stderrWriter struct{ s *Session }

func (w stderrWriter) Write(p []byte) (int, error) {
	w.s.errMu.Lock()
	defer w.s.errMu.Unlock()
	w.s.conn.touch()
	if !w.s.rec.output(w.s, p) {
		return 0, errUnrecorded
	}
	n, err := w.s.ch.Stderr().Write(p)
	w.s.bytesOut.Add(int64(n))
	return n, err
}

// ID returns the session's id: it ties the session's audit events and
// recording together and is SSHMESH_SESSION_ID in a login session.
func (s *Session) ID() string { return s.id }

// CloseWrite sends EOF on stdout: the client sees the end of output.
func (s *Session) CloseWrite() error { return s.ch.CloseWrite() }

// Context is done when the session ends (the client closed it or went
// away, or the handler ended it) and as soon as the server begins
// [Server.Shutdown]: a handler should then finish its work and return;
// Shutdown waits for it until its own context ends. The processes of the
// default [LoginHandler] are not ended by Shutdown's start, as sshd leaves
// running sessions alone, only by its deadline.
func (s *Session) Context() context.Context { return s.ctx }

// Done is closed when the session ends (the client closed it or went away,
// or the handler ended it). Unlike [Session.Context], it stays open when
// Shutdown begins: a handler that runs the user's own work until the
// session ends (as [LoginHandler] does) waits on it.
func (s *Session) Done() <-chan struct{} { return s.life.Done() }

// ServerEnviron returns the variables the server sets for the session
// itself, as KEY=VALUE: SSHMESH_SESSION_ID, and SSH_AUTH_SOCK when the
// agent is forwarded. They are not subject to the rule's acceptEnv.
func (s *Session) ServerEnviron() []string { return append([]string(nil), s.extraEnv...) }

// AccountUID returns the uid the local account had when the login was
// decided, "" when there was no such account (an appliance's names). A
// handler that acts as the account acts as exactly this uid (see
// session.Request.UID).
func (s *Session) AccountUID() string { return s.conn.localUID }

// Logger returns the server's logger with the conn, peer and session ids.
func (s *Session) Logger() *slog.Logger { return s.log() }

// Identity returns who is logged in.
func (s *Session) Identity() Identity { return s.conn.identity }

// LocalUser returns the local account the policy mapped the caller to.
func (s *Session) LocalUser() string { return s.conn.decision.LocalUser }

// Decision returns the policy decision that let this conn in, with the
// options of its rule.
func (s *Session) Decision() policy.Decision { return s.conn.decision }

// RawCommand returns the command the client asked to run exactly as sent;
// "" for a shell or a subsystem.
func (s *Session) RawCommand() string {
	if s.kind != "exec" {
		return ""
	}
	return s.raw
}

// Command returns RawCommand split into words the way a POSIX shell splits
// simple quoting ('...', "...", \); nil for a shell or a subsystem. A
// command with unbalanced quotes comes back as one word.
func (s *Session) Command() []string {
	if s.kind != "exec" {
		return nil
	}
	return splitCommand(s.raw)
}

// Subsystem returns the subsystem the client asked for ("sftp"), or "".
func (s *Session) Subsystem() string {
	if s.kind != "subsystem" {
		return ""
	}
	return s.raw
}

// Environ returns the variables the client sent as KEY=VALUE, only those
// the rule's acceptEnv allows (and never loader variables such as LD_*).
func (s *Session) Environ() []string { return append([]string(nil), s.env...) }

// Pty returns the terminal the client asked for, if any. The window is the
// initial size; [Session.WindowChanges] reports later ones.
func (s *Session) Pty() (Pty, bool) {
	if s.pty == nil {
		return Pty{}, false
	}
	return *s.pty, true
}

// WindowChanges delivers the client's window changes. It holds only the
// latest one: a slow reader skips sizes, never blocks the session. It is
// closed when the session ends, so `for w := range s.WindowChanges()`
// ends with it. A window of 0×0 means the client does not know its size
// (ssh -tt without a terminal asks for one): treat 0 as unknown.
func (s *Session) WindowChanges() <-chan Window { return s.windows }

// Signals delivers the signals the client sends. It is buffered; when the
// handler does not read, signals beyond the buffer are dropped (and logged),
// never blocking the session. It is closed when the session ends.
func (s *Session) Signals() <-chan Signal { return s.signals }

// Breaks delivers the client's break requests (RFC 4335) with their
// length. It is closed when the session ends.
func (s *Session) Breaks() <-chan time.Duration { return s.breaks }

// LocalAddr returns the server's mesh address the conn reached.
func (s *Session) LocalAddr() netip.AddrPort { return s.conn.peer.Local }

// Exit ends the session with an exit status: the client gets exit-status,
// then EOF, then the channel closes. Only the first Exit or ExitSignal
// counts; later calls return its error. A session whose rule records it
// fail-closed first closes its recording (waiting, at most the
// recorder's bound, until the recording is stored to its end); if that
// fails, the status is 254.
func (s *Session) Exit(code int) error {
	s.exitOnce.Do(func() {
		if s.rec.endBeforeExit(s) {
			code = 254 // the rule's recording failed closed
			s.message(recordingFailedMessage)
		}
		s.exitStatus(code)
	})
	return s.exitErr
}

// recordingFailedMessage is what the client reads on stderr when a
// session ends because its fail-closed recording failed.
const recordingFailedMessage = "recording failed; this session must be recorded, so it ends"

// exitStatus ends the session with exit-status code.
func (s *Session) exitStatus(code int) {
	s.ending = ending{exited: true, code: code}
	st := struct{ Status uint32 }{uint32(code)}
	s.exitErr = s.finish("exit-status", ssh.Marshal(&st))
}

// ExitSignal ends the session reporting that the program died by sig, as
// OpenSSH does when a child is killed (the OpenSSH client then exits 255).
func (s *Session) ExitSignal(sig Signal, coreDumped bool, message string) error {
	s.exitOnce.Do(func() {
		if s.rec.endBeforeExit(s) {
			s.message(recordingFailedMessage)
			s.exitStatus(254)
			return
		}
		msg := struct {
			Signal     string
			CoreDumped bool
			Message    string
			Lang       string
		}{string(sig), coreDumped, message, ""}
		s.ending = ending{signal: sig}
		s.exitErr = s.finish("exit-signal", ssh.Marshal(&msg))
	})
	return s.exitErr
}

// abort ends the session without exit status, telling the client why on
// stderr (revocation, session duration).
func (s *Session) abort(message string) {
	s.exitOnce.Do(func() {
		s.ending = ending{reason: "aborted: " + message}
		s.message(message)
		s.closeWrite()
		s.exitErr = s.ch.Close()
		s.end()
	})
}

// message tells the client something on stderr, from any goroutine. It
// gives up when a write of the handler's holds stderr (a client that does
// not read) for longer than lockWait.
func (s *Session) message(text string) {
	if lockWithin(&s.errMu, lockWait) {
		fmt.Fprintf(s.ch.Stderr(), "\r\nsshmesh: %s\r\n", text)
		s.errMu.Unlock()
	}
}

// closeWrite sends EOF unless a write of the handler's is in flight for
// longer than lockWait (then CLOSE alone ends the channel).
func (s *Session) closeWrite() {
	if !lockWithin(&s.outMu, lockWait) {
		return
	}
	defer s.outMu.Unlock()
	if !lockWithin(&s.errMu, lockWait) {
		return
	}
	defer s.errMu.Unlock()
	s.ch.CloseWrite()
}

// lockWait bounds how long a session's ending waits for a write in flight.
const lockWait = 200 * time.Millisecond

// lockWithin locks mu, giving up after d.
func lockWithin(mu *sync.Mutex, d time.Duration) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(time.Millisecond) {
		if mu.TryLock() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

func (s *Session) finish(req string, payload []byte) error {
	_, err := s.ch.SendRequest(req, false, payload)
	s.closeWrite()
	if cerr := s.ch.Close(); err == nil && cerr != nil && !errors.Is(cerr, io.EOF) {
		err = cerr
	}
	s.end()
	return err
}

// log returns the server's logger with the conn's id and peer and the
// session's id.
func (s *Session) log() *slog.Logger { return s.conn.log().With("session", s.id) }

// ending is how a session ended: an exit status, a signal, or (neither
// sent) a reason.
type ending struct {
	exited bool // with exit status code
	code   int
	signal Signal
	reason string
}

// attr is the ending as the "session end" event's attribute.
func (e ending) attr() []any {
	switch {
	case e.exited:
		return []any{"exit_status", e.code}
	case e.signal != "":
		return []any{"signal", string(e.signal)}
	}
	return []any{"reason", e.reason}
}

// splitCommand splits s into words with POSIX-shell quoting rules for
// '...', "..." and backslash. Unbalanced quotes return s as one word.
func splitCommand(s string) []string {
	var words []string
	var cur []byte
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, string(cur))
				cur, inWord = cur[:0], false
			}
		case c == '\\':
			if i+1 >= len(s) {
				return []string{s}
			}
			i++
			cur, inWord = append(cur, s[i]), true
		case c == '\'':
			j := i + 1
			for j < len(s) && s[j] != '\'' {
				j++
			}
			if j >= len(s) {
				return []string{s}
			}
			cur, inWord = append(cur, s[i+1:j]...), true
			i = j
		case c == '"':
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' && j+1 < len(s) && (s[j+1] == '"' || s[j+1] == '\\' || s[j+1] == '$' || s[j+1] == '`') {
					j++
				}
				cur = append(cur, s[j])
			}
			if j >= len(s) {
				return []string{s}
			}
			inWord = true
			i = j
		default:
			cur, inWord = append(cur, c), true
		}
	}
	if inWord {
		words = append(words, string(cur))
	}
	return words
}
