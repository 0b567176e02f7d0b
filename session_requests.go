package sshmesh

import (
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"
)

// A session channel's requests, as RFC 4254 §6 and OpenSSH's extensions
// define them: pty-req, env, window-change, signal, break and
// eow@openssh.com feed the Session (session.go); shell, exec or subsystem
// starts the handler (serve), once.

// handleRequests serves the channel's requests until the channel closes,
// starting the handler on shell, exec or subsystem.
func (s *Session) handleRequests(reqs <-chan *ssh.Request, handlerOf func(*Session) Handler, done chan<- struct{}) {
	defer close(done)
	started := false
	handlerDone := make(chan struct{})
	for req := range reqs {
		ok := false
		switch req.Type {
		case "pty-req":
			if !started {
				if p, err := parsePtyReq(req.Payload); err == nil {
					s.pty = &p
					ok = true
				}
			}
		case "env":
			var kv struct{ Name, Value string }
			if !started && len(s.env) < maxEnvVars && ssh.Unmarshal(req.Payload, &kv) == nil {
				ok = s.conn.acceptEnv(kv.Name, kv.Value)
				if ok {
					s.env = append(s.env, kv.Name+"="+kv.Value)
				}
			}
		case "shell", "exec", "subsystem":
			if started {
				break
			}
			var arg struct{ Value string }
			if req.Type != "shell" && ssh.Unmarshal(req.Payload, &arg) != nil {
				break
			}
			s.kind, s.raw = req.Type, arg.Value
			started, ok = true, true
			if req.WantReply {
				req.Reply(true, nil)
			}
			go s.serve(handlerOf(s), handlerDone)
			continue
		case "window-change":
			var w struct{ Cols, Rows, Width, Height uint32 }
			if ssh.Unmarshal(req.Payload, &w) == nil {
				win := Window(w)
				if s.pty != nil && !started {
					s.pty.Window = win
				}
				latest(s.windows, win)
				s.rec.resize(s, win)
				ok = true
			}
		case "signal":
			var sig struct{ Name string }
			if ssh.Unmarshal(req.Payload, &sig) == nil {
				select {
				case s.signals <- Signal(sig.Name):
				default:
					s.conn.srv.logger().Warn("signal dropped: handler not reading", "peer", s.conn.peer.Key.String(), "signal", sig.Name)
				}
				ok = true
			}
		case "eow@openssh.com":
			// The client's stdout is gone (OpenSSH's chan_write_failed);
			// sshd then stops reading the command's stdout
			// (chan_rcvd_eow in its nchan.c).
			s.outClosed.Store(true)
			ok = true
		case "break":
			var b struct{ Ms uint32 }
			if ssh.Unmarshal(req.Payload, &b) == nil {
				select {
				case s.breaks <- time.Duration(b.Ms) * time.Millisecond:
				default:
				}
				ok = true
			}
		default:
			if handled, accepted := s.extraRequest(req, started); handled {
				ok = accepted
			}
		}
		if req.WantReply {
			req.Reply(ok, nil)
		}
	}
	// The client closed the channel (or the conn went away): no more
	// window changes, signals or breaks, and a handler ranging over them
	// ends its loop.
	close(s.windows)
	close(s.signals)
	close(s.breaks)
	s.end()
	if started {
		<-handlerDone
	}
}

// serve runs the handler, then ends the session with status 0 if the
// handler did not end it itself.
func (s *Session) serve(h Handler, done chan<- struct{}) {
	defer close(done)
	c := s.conn
	log := s.log()
	c.mu.Lock() // enforceDeadlines reads started under c.mu
	s.started = c.srv.now()
	c.mu.Unlock()
	s.startedAt.Store(time.Now().UnixNano())
	term := ""
	if s.pty != nil {
		term = s.pty.Term
	}
	if !s.startRecording() {
		return
	}
	log.Info("session start", "user", c.identity.User,
		"local_user", c.decision.LocalUser, "kind", s.kind, "command", s.raw, "pty", s.pty != nil, "term", term, "recorded", s.rec != nil)
	defer func() {
		if r := recover(); r != nil {
			log.Error("handler panicked; session ended", "panic", fmt.Sprint(r))
			fmt.Fprintf(s.Stderr(), "sshmesh: internal error, session ended\r\n")
			s.Exit(255)
		}
		s.rec.close(s)
		attrs := []any{"local_user", c.decision.LocalUser,
			"duration_s", c.srv.now().Sub(s.started).Round(time.Millisecond).Seconds(), "bytes_in", s.bytesIn.Load(), "bytes_out", s.bytesOut.Load()}
		attrs = append(attrs, s.ending.attr()...)
		log.Info("session end", attrs...)
	}()
	h.ServeSSH(s)
	s.Exit(0)
}

// latest puts v in a one-slot channel, replacing what is there.
func latest[T any](ch chan T, v T) {
	for {
		select {
		case ch <- v:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// parsePtyReq decodes a pty-req request's payload (RFC 4254 §6.2).
func parsePtyReq(b []byte) (Pty, error) {
	var r struct {
		Term                      string
		Cols, Rows, Width, Height uint32
		Modes                     string
	}
	if err := ssh.Unmarshal(b, &r); err != nil {
		return Pty{}, err
	}
	return Pty{Term: r.Term, Window: Window{Cols: r.Cols, Rows: r.Rows, Width: r.Width, Height: r.Height}, Modes: []byte(r.Modes)}, nil
}
