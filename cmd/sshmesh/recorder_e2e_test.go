package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sshmesh/sshmesh/asciicast"
	"github.com/sshmesh/sshmesh/internal/browsertest"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// recorderFixture is a mesh of four nodes run by the binary: srv (serve,
// its rule streams recordings to tag:recorder, fail-closed), rec (sshmesh
// recorder), laptop (the caller, whose owner may view recordings) and
// boblap (another owner, who may not).
type recorderFixture struct {
	dir, recDir, polPath, login        string
	srvConf, recConf, lapConf, bobConf string
	rec                                *sshmeshtest.Node
	recLog, srvLog                     *sshmeshtest.Buffer
	recCmd                             *exec.Cmd
}

func newRecorderFixture(t *testing.T) *recorderFixture {
	t.Helper()
	m := sshmeshtest.NewMesh(t, 4)
	for _, n := range m.Nodes {
		n.Node.Close()
	}
	srv, rec, lap, bob := m.Nodes[0], m.Nodes[1], m.Nodes[2], m.Nodes[3]
	f := &recorderFixture{dir: t.TempDir(), rec: rec}
	f.recDir = filepath.Join(f.dir, "recordings")
	f.srvConf = srv.WriteWGQuick(t, filepath.Join(f.dir, "srv.conf"))
	f.recConf = rec.WriteWGQuick(t, filepath.Join(f.dir, "rec.conf"))
	f.lapConf = lap.WriteWGQuick(t, filepath.Join(f.dir, "laptop.conf"))
	f.bobConf = bob.WriteWGQuick(t, filepath.Join(f.dir, "boblap.conf"))
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	f.login = me.Username + "@" + srv.Addr.String()
	pol := fmt.Sprintf(`{
  "nodes": {
    "srv":    {"key": %q, "tags": ["tag:server"]},
    "rec":    {"key": %q, "tags": ["tag:recorder"]},
    "laptop": {"key": %q, "owner": "%s@example.com"},
    "boblap": {"key": %q, "owner": "bob@example.com"},
  },
  "tagOwners": {"tag:server": ["%s@example.com"], "tag:recorder": ["%s@example.com"]},
  "ssh": [{"action": "accept", "src": ["laptop"], "dst": ["tag:server"], "users": ["root", "="],
           "record": true, "recorders": ["tag:recorder"], "onRecordingFailure": "fail-closed",
           "message": "sessions on srv are recorded off-host"}],
}`, srv.Key.Public(), rec.Key.Public(), lap.Key.Public(), me.Username, bob.Key.Public(), me.Username, me.Username)
	f.polPath = filepath.Join(f.dir, "policy.hujson")
	if err := os.WriteFile(f.polPath, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	f.startRecorder(t, me.Username+"@example.com")
	f.srvLog = &sshmeshtest.Buffer{}
	startServe(t, f.srvLog, nil, "--wg", f.srvConf, "--policy", f.polPath, "--hostkey", filepath.Join(f.dir, "hostkey"),
		"--check-port", "0", "--recorder-timeout", "4s")
	return f
}

func (f *recorderFixture) startRecorder(t *testing.T, viewer string) {
	t.Helper()
	f.recLog = &sshmeshtest.Buffer{}
	cmd := exec.Command(binPath, "recorder", "--wg", f.recConf, "--policy", f.polPath, "--dir", f.recDir,
		"--senders", "tag:server", "--viewers", viewer)
	cmd.Stdout, cmd.Stderr = f.recLog, f.recLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.recCmd = cmd
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("recorder log:\n%s", f.recLog.String())
		}
	})
	f.recLog.WaitFor(t, "recorder ready")
}

// castText returns the output events of the recording at path, joined.
func castText(t *testing.T, path string) string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	rd, err := asciicast.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return b.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Code == asciicast.Output {
			b.WriteString(ev.Data)
		}
	}
}

func findCasts(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*", "*.cast"))
	return files
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRecorderE2E: stock ssh sessions on a rule that records to a recorder
// node. The recorder has the output byte for byte while the session runs
// and after, and the server keeps none; the page lists and plays it for its
// viewer (headless Chromium through `sshmesh proxy`) and refuses another
// owner; when the recorder is killed mid-session the session ends with 254,
// and with the recorder down a login is refused with the rule's message.
func TestRecorderE2E(t *testing.T) {
	f := newRecorderFixture(t)

	// A session, seen on the recorder while it runs.
	s := startEchoSession(t, f.lapConf, f.login)
	s.alive(t, "while-running-1")
	var live string
	waitUntil(t, "the running session on the recorder", func() bool {
		files := findCasts(f.recDir)
		if len(files) != 1 {
			return false
		}
		live = files[0]
		return strings.Contains(castText(t, live), "echo:while-running-1\r\n") || strings.Contains(castText(t, live), "echo:while-running-1\n")
	})
	if rel, _ := filepath.Rel(f.recDir, live); !strings.HasPrefix(rel, "srv"+string(filepath.Separator)) {
		t.Errorf("recording at %s, want under srv/", rel)
	}
	s.in.Close()
	s.cmd.Wait()

	// A command's output, byte for byte.
	out, errOut, code := stockSSH(t, f.lapConf, f.login, `printf 'héllo\tworld\n'; seq 1 3000; printf '\033[1mbold\033[0m end'`)
	if code != 0 {
		t.Fatalf("ssh: exit %d, %s", code, errOut)
	}
	var cmdCast string
	waitUntil(t, "the second recording to be complete", func() bool {
		for _, p := range findCasts(f.recDir) {
			if p == live {
				continue
			}
			cmdCast = p
			b, _ := os.ReadFile(strings.TrimSuffix(p, ".cast") + ".json")
			return strings.Contains(string(b), `"complete": true`)
		}
		return false
	})
	if got := castText(t, cmdCast); got != out {
		t.Errorf("the recording (%d bytes of output) differs from what the client got (%d bytes)", len(got), len(out))
	}
	// The server keeps no copy: nothing it was given (--record) and no cast
	// anywhere in its state.
	if strings.Contains(f.srvLog.String(), ".cast") {
		t.Errorf("the server log names a local recording:\n%s", f.srvLog.String())
	}

	t.Run("page", func(t *testing.T) { f.checkPage(t, cmdCast) })

	// The recorder is killed mid-session: the session ends with 254 within
	// the bound (4s; the limit here is generous).
	s = startEchoSession(t, f.lapConf, f.login)
	s.alive(t, "before-kill")
	f.recCmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	io.Copy(io.Discard, s.out)
	err := s.cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 254 {
		t.Errorf("session after the recorder was killed: %v, want exit 254; stderr %s", err, s.err.String())
	}
	if d := time.Since(killed); d > 40*time.Second {
		t.Errorf("the session ended %s after the recorder was killed", d)
	}
	if !strings.Contains(s.err.String(), "recording failed") {
		t.Errorf("stderr %q, want the recording failure", s.err.String())
	}

	// With the recorder down, the login is refused with the rule's message.
	out, errOut, code = stockSSH(t, f.lapConf, f.login, "echo must-not-run")
	if code != 254 || strings.Contains(out, "must-not-run") || !strings.Contains(errOut, "sessions on srv are recorded off-host") {
		t.Errorf("login with the recorder down: exit %d, stdout %q, stderr %q; want 254 and the rule's message", code, out, errOut)
	}
}

// checkPage: the viewer lists the recording and plays it; another owner
// gets 403; a request naming another Host is refused.
func (f *recorderFixture) checkPage(t *testing.T, cast string) {
	rel, _ := filepath.Rel(f.recDir, cast)
	parts := strings.Split(strings.TrimSuffix(rel, ".cast"), string(filepath.Separator))
	base := "http://" + f.rec.Addr.String()

	socks, _ := startCheckProxy(t, f.lapConf)
	ctx := browsertest.Start(t, browsertest.Options{Proxy: socks})
	if code := browsertest.Visit(t, ctx, base+"/?node=srv"); code != http.StatusOK {
		t.Fatalf("list: status %d", code)
	}
	list := browsertest.Text(t, ctx, "#recordings")
	for _, want := range []string{"laptop", "srv", "exec", "seq 1 3000"} {
		if !strings.Contains(list, want) {
			t.Errorf("the list does not show %q:\n%s", want, list)
		}
	}
	if code := browsertest.Visit(t, ctx, base+"/play/"+strings.Join(parts, "/")); code != http.StatusOK {
		t.Fatalf("play: status %d", code)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	text, err := chromedp.Run(wctx, chromedp.Poll[string](`(() => { const t = document.querySelector("#player").textContent; return t.includes("2999") && t.includes("end") ? t : null })()`))
	if err != nil {
		browsertest.Screenshot(t, ctx, filepath.Join(f.dir, "play.png"))
		got, _ := chromedp.Run(ctx, chromedp.TextContent("#player"))
		t.Fatalf("the player does not show the session's text: %v; it shows %q", err, got)
	}
	if !strings.Contains(text, "bold end") {
		t.Errorf("player text %q", text)
	}
	f.recLog.WaitFor(t, "recording viewed")

	// Another owner's browser is refused.
	bobSocks, _ := startCheckProxy(t, f.bobConf)
	bctx := browsertest.Start(t, browsertest.Options{Proxy: bobSocks})
	if code := browsertest.Visit(t, bctx, base+"/"); code != http.StatusForbidden {
		t.Errorf("another owner's list: status %d, want 403", code)
	}
	if code := browsertest.Visit(t, bctx, base+"/cast/"+strings.Join(parts, "/")); code != http.StatusForbidden {
		t.Errorf("another owner's fetch of the recording: status %d, want 403", code)
	}
}
