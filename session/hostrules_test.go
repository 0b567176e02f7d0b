//go:build linux

package session

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// TestCheckAccount: without PAM, a nologin file refuses everyone but root
// with its text, and a shadow expiry date today or earlier refuses; a "!"
// password does not.
func TestCheckAccount(t *testing.T) {
	dir := t.TempDir()
	nologin := filepath.Join(dir, "nologin")
	empty := filepath.Join(dir, "empty-nologin")
	writeFile(t, empty, "")
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	today := now.Unix() / 86400
	shadow := filepath.Join(dir, "shadow")
	writeFile(t, shadow, fmt.Sprintf(`alice:!:20000:0:99999:7:::
bob:$6$x$y:20000:0:99999:7::%d:
carol:*:20000:0:99999:7::%d:
dave:!$6$x$y:20000:0:99999:7::0:
erin:x:20000:0:99999:7::soon:
`, today, today+1))
	cfg := accountConfig{shadow: shadow, now: func() time.Time { return now }}
	writeFile(t, nologin, "Down for maintenance until 18:00.\n")
	tests := []struct {
		name, user, uid string
		nologin         []string
		wantMsg         string // "" = allowed
		wantErr         bool   // a failure, not a refusal
	}{
		{name: "locked password, no expiry", user: "alice", uid: "1000", nologin: []string{}},
		{name: "nologin", user: "alice", uid: "1000", nologin: []string{filepath.Join(dir, "missing"), nologin}, wantMsg: "Down for maintenance until 18:00."},
		{name: "empty nologin", user: "alice", uid: "1000", nologin: []string{empty}, wantMsg: "Logins are currently disabled on this host (" + empty + ")."},
		{name: "root ignores nologin", user: "root", uid: "0", nologin: []string{nologin}},
		{name: "expired today", user: "bob", uid: "1001", nologin: []string{}, wantMsg: "Your account has expired; please contact your system administrator."},
		{name: "expires tomorrow", user: "carol", uid: "1002", nologin: []string{}},
		{name: "expiry 0 is 1970", user: "dave", uid: "1003", nologin: []string{}, wantMsg: "Your account has expired; please contact your system administrator."},
		{name: "bad expiry fails closed", user: "erin", uid: "1004", nologin: []string{}, wantErr: true},
		{name: "no shadow entry", user: "frank", uid: "1005", nologin: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := checkAccount(t.Context(), HostRules{Nologin: tt.nologin}, Account{User: &User{Name: tt.user, Uid: tt.uid}}, cfg)
			var ce *ClientError
			switch {
			case tt.wantErr:
				if err == nil || errors.As(err, &ce) {
					t.Errorf("err = %v, want a failure that is not a refusal", err)
				}
			case tt.wantMsg == "":
				if err != nil {
					t.Errorf("refused: %v", err)
				}
			case !errors.As(err, &ce) || !errors.Is(err, ErrAccountRefused):
				t.Errorf("err = %v, want a refusal", err)
			case ce.Msg != tt.wantMsg:
				t.Errorf("message %q, want %q", ce.Msg, tt.wantMsg)
			}
		})
	}
}

// TestLoginUID: a session's processes carry the user's audit login uid,
// as pam_loginuid sets it for sshd, and the server's own does not change.
func TestLoginUID(t *testing.T) {
	u := testUser(t)
	if _, err := os.Stat("/proc/self/loginuid"); err != nil {
		testkit.SkipOrFail(t, "this kernel has no audit support (/proc/self/loginuid): "+err.Error())
	}
	before := string(readFile(t, "/proc/self/loginuid"))
	var out testkit.Buffer
	p, err := start(t.Context(), Request{User: u.Name, Command: "cat /proc/self/loginuid; echo; exec sleep 30", Stdout: &out}, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	out.WaitFor(t, "\n")
	if got := strings.TrimSpace(out.String()); got != u.Uid {
		t.Errorf("the session's /proc/self/loginuid = %q, want %s", got, u.Uid)
	}
	if got := string(readFile(t, fmt.Sprintf("/proc/%d/loginuid", p.Pid()))); got != u.Uid {
		t.Errorf("/proc/<child>/loginuid = %q, want %s", got, u.Uid)
	}
	if after := string(readFile(t, "/proc/self/loginuid")); after != before {
		t.Errorf("the server's loginuid changed from %s to %s", before, after)
	}
	p.Signal("KILL")
	p.Wait()
}

// TestLastLog: a login with a terminal is written to lastlog, and the next
// interactive login shows it as sshd's PrintLastLog does; a command with a
// terminal does not show it, and ~/.hushlogin silences it.
func TestLastLog(t *testing.T) {
	u := testUser(t)
	cfg := testConfig(t)
	login := func() string {
		t.Helper()
		r := run(t, cfg, Request{User: u.Name, Pty: &Pty{Term: "dumb"}, Stdin: strings.NewReader("exit 0\n"),
			Remote: mustAddrPort("100.64.0.2:40000")})
		return r.stdout
	}
	if out := login(); strings.Contains(out, "Last login") {
		t.Errorf("first login shows a last login: %q", out)
	}
	out := login()
	if !regexp.MustCompile(`Last login: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} from 100\.64\.0\.2\r\n`).MatchString(out) {
		t.Errorf("second login: no sshd-style last login line in %q", out)
	}
	if r := run(t, cfg, Request{User: u.Name, Command: "true", Pty: &Pty{}}); strings.Contains(r.stdout, "Last login") {
		t.Errorf("a command shows the last login: %q", r.stdout)
	}
	writeFile(t, filepath.Join(u.Home, ".hushlogin"), "")
	if out := login(); strings.Contains(out, "Last login") {
		t.Errorf("~/.hushlogin does not silence the last login: %q", out)
	}
	var uid uint32
	fmt.Sscan(u.Uid, &uid)
	last, ok := readLastlog(cfg.lastlog, uid)
	if !ok || last.host != "100.64.0.2" || !strings.HasPrefix(last.line, "pts/") || time.Since(last.when) > time.Hour {
		t.Errorf("lastlog record %+v, %v", last, ok)
	}
}

// TestUserRC: ~/.ssh/rc runs before the command, as the user, in the home
// directory, with the session's environment and output, as sshd runs it;
// with a terminal too; without it, the system's sshrc runs.
func TestUserRC(t *testing.T) {
	u := testUser(t)
	cfg := testConfig(t)
	cfg.sshrc = filepath.Join(u.Home, "system-sshrc") // where the user can read it
	writeFile(t, cfg.sshrc, "echo system-rc\n")
	if r := run(t, cfg, Request{User: u.Name, Command: "echo main"}); r.stdout != "system-rc\nmain\n" {
		t.Errorf("without ~/.ssh/rc: stdout %q, stderr %q; want the system rc, then main", r.stdout, r.stderr)
	}
	if err := os.MkdirAll(filepath.Join(u.Home, ".ssh"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(u.Home, ".ssh", "rc"), `echo "rc $(id -un) $PWD $SSHMESH_E2E"; read x && echo "rc read $x"`+"\n")
	r := run(t, cfg, Request{User: u.Name, Command: "echo main", Env: []string{"SSHMESH_E2E=1"}, Stdin: strings.NewReader("typed\n")})
	if want := fmt.Sprintf("rc %s %s 1\nmain\n", u.Name, u.Home); r.stdout != want {
		t.Errorf("~/.ssh/rc: stdout %q, want %q (stdin not given to rc)", r.stdout, want)
	}
	r = run(t, cfg, Request{User: u.Name, Command: "tty", Pty: &Pty{}})
	if !regexp.MustCompile(`^rc \S+ \S+ \r\n/dev/pts/\d+\r\n$`).MatchString(r.stdout) {
		t.Errorf("~/.ssh/rc with a terminal: stdout %q", r.stdout)
	}
}
