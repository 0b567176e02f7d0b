package session

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// A child inherits the signals its parent ignores: a server started under
// nohup, or as `server &` from a script, ignores SIGHUP or SIGINT, and its
// sessions would too (Ctrl-C would do nothing, a hangup would not end
// them). sshd resets them in the session child; exec cannot, so the server
// process catches them instead: a caught signal is reset to its default in
// a child, and for the server catching and discarding it is the same as
// ignoring it.

// childDefaultSignals are the signals a session must start with at their
// default disposition.
var childDefaultSignals = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGPIPE}

var resetIgnoredOnce sync.Once

// resetIgnoredSignals makes the signals the server ignores caught (and
// discarded) instead, once per process.
func resetIgnoredSignals() {
	resetIgnoredOnce.Do(func() {
		var ignored []os.Signal
		for _, s := range childDefaultSignals {
			if signal.Ignored(s) {
				ignored = append(ignored, s)
			}
		}
		if len(ignored) == 0 {
			return
		}
		c := make(chan os.Signal, 8)
		signal.Notify(c, ignored...)
		go func() {
			for range c {
			}
		}()
	})
}
