package session

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// The main thread is special for the audit login uid: /proc/PID/loginuid
// shows the main thread's, and Go never ends that thread. The tests' main
// goroutine stays on the main thread (locked in init) and runs what
// onMainThread sends it while m.Run goes on elsewhere, so a test can do
// there what a server's goroutine may happen to do there.

var mainThreadWork = make(chan func())

func init() { runtime.LockOSThread() }

func TestMain(m *testing.M) {
	code := make(chan int, 1)
	go func() { code <- m.Run() }()
	for {
		select {
		case f := <-mainThreadWork:
			f()
		case c := <-code:
			os.Exit(c)
		}
	}
}

// onMainThread runs f on the process's main thread and waits for it.
func onMainThread(f func()) {
	done := make(chan struct{})
	mainThreadWork <- func() {
		defer close(done)
		f()
	}
	<-done
}

// TestLoginUIDNotOnMainThread: a session started by a goroutine that runs
// on the main thread takes the user's loginuid on another thread; the
// server's own (the main thread's) stays as it was.
func TestLoginUIDNotOnMainThread(t *testing.T) {
	testkit.NeedRoot(t)
	if _, err := os.Stat("/proc/self/loginuid"); err != nil {
		testkit.SkipOrFail(t, "this kernel has no audit support (/proc/self/loginuid): "+err.Error())
	}
	u := testUser(t)
	before := string(readFile(t, "/proc/self/loginuid"))
	var seen string
	var err error
	onMainThread(func() {
		err = onLoginThread(func() error {
			if err := setThreadLoginUID(u.Uid); err != nil {
				return err
			}
			seen = string(readFile(t, loginUIDFile))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(seen) != u.Uid {
		t.Errorf("the login thread's loginuid = %q, want %s", seen, u.Uid)
	}
	if after := string(readFile(t, "/proc/self/loginuid")); after != before {
		t.Errorf("the server's loginuid changed from %s to %s", before, after)
	}
}
