package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
)

// TestRecorderReload: SIGHUP makes `sshmesh recorder` re-read its policy
// (which names the nodes --senders and --viewers match) and its wg-quick
// file. A bad file is logged with its line and changes nothing: the
// recorder still takes the server's recordings; a good policy in which
// the server's node no longer has the senders' tag applies: the stream of
// the server's session in progress ends (the fail-closed session with
// 254), and its next fail-closed session is refused.
func TestRecorderReload(t *testing.T) {
	f := newRecorderFixture(t)
	hup := func() {
		t.Helper()
		if err := f.recCmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	good, err := os.ReadFile(f.polPath)
	if err != nil {
		t.Fatal(err)
	}
	goodWG, err := os.ReadFile(f.recConf)
	if err != nil {
		t.Fatal(err)
	}

	// A policy with a syntax error: logged with file and line, not applied.
	i := strings.Index(string(good), `"tagOwners": {`)
	badLine := strings.Count(string(good[:i]), "\n") + 1
	bad := strings.Replace(string(good), `"tagOwners": {`, `"tagOwners" {`, 1)
	os.WriteFile(f.polPath, []byte(bad), 0o600)
	hup()
	waitCount(t, f.recLog, "reload failed", 1)
	if want := fmt.Sprintf("file=%s line=%d", f.polPath, badLine); !strings.Contains(f.recLog.String(), want) {
		t.Errorf("the failed reload does not say %q:\n%s", want, f.recLog.String())
	}

	// A wg-quick file with a bad key: the same.
	os.WriteFile(f.polPath, good, 0o600)
	os.WriteFile(f.recConf, append(append([]byte(nil), goodWG...), "\n[Peer]\nPublicKey = not-a-key\n"...), 0o600)
	hup()
	waitCount(t, f.recLog, "reload failed", 2)
	wgLine := strings.Count(string(goodWG), "\n") + 3
	if want := fmt.Sprintf("file=%s line=%d", f.recConf, wgLine); !strings.Contains(f.recLog.String(), want) {
		t.Errorf("the failed reload does not say %q:\n%s", want, f.recLog.String())
	}
	if out, errOut, code := stockSSH(t, f.lapConf, f.login, "echo still-recorded"); code != 0 || out != "still-recorded\n" {
		t.Fatalf("after the failed reloads: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// A policy in which srv lost tag:server (it is nobody's node now;
	// srv2 has the tag, so --senders still names a node): srv may no
	// longer send, and the stream of its session in progress ends (the
	// fail-closed session with 254).
	open := startEchoSession(t, f.lapConf, f.login)
	open.alive(t, "before the reload")
	os.WriteFile(f.recConf, goodWG, 0o600)
	other, _ := meshkey.NewPrivate()
	moved := strings.Replace(string(good), `"tags": ["tag:server"]},`, `"owner": "nobody@example.com"},
    "srv2":   {"key": "`+other.Public().String()+`", "tags": ["tag:server"]},`, 1)
	if moved == string(good) {
		t.Fatal("the test's policy edit did not apply")
	}
	os.WriteFile(f.polPath, []byte(moved), 0o600)
	hup()
	waitCount(t, f.recLog, "msg=reloaded", 1)
	ended := make(chan error, 1)
	go func() { ended <- open.cmd.Wait() }()
	select {
	case err := <-ended:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 254 {
			t.Errorf("the open session ended with %v, want exit status 254; stderr %s", err, open.err.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the open session still runs 60 s after the reload dropped its server from --senders")
	}
	if !strings.Contains(f.recLog.String(), "reload ended streams it no longer allows") {
		t.Errorf("the recorder did not log the stream it ended:\n%s", f.recLog.String())
	}
	out, errOut, code := stockSSH(t, f.lapConf, f.login, "echo must-not-run")
	if code != 254 || strings.Contains(out, "must-not-run") {
		t.Errorf("after the reload: exit %d, stdout %q, stderr %q; want 254 (the recorder refuses srv)", code, out, errOut)
	}
	if !strings.Contains(f.recLog.String(), "recording refused: the node may not send recordings") {
		t.Errorf("the recorder did not refuse srv after the reload:\n%s", f.recLog.String())
	}
}
