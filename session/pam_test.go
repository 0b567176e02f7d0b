//go:build linux

package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// pamStack is a PAM service file for tests, in a directory of its own
// (pam_start_confdir), with every file its modules read next to it: the
// host's /etc/pam.d and /etc/security are never touched.
//
// pam_systemd (a logind session, XDG_RUNTIME_DIR) is not in it: it needs
// systemd as PID 1 and D-Bus, which CI containers do not run. On a systemd
// host, docs/operations.md says how to check it by hand.
type pamStack struct {
	rules   HostRules
	dir     string
	nologin string // created by a test to refuse logins
}

// newPAMStack builds the helper and writes the stack: account with
// pam_nologin and pam_access (refusing the user deny), session with
// pam_loginuid, pam_mkhomedir, pam_limits (nofile 4321 for allow) and
// pam_env (SSHMESH_PAM_TEST, and LD_PRELOAD and HOME, which must not pass).
func newPAMStack(t *testing.T, allow, deny string) *pamStack {
	t.Helper()
	testkit.NeedRoot(t)
	dir := t.TempDir()
	helper := filepath.Join(dir, "sshmesh-pam")
	build := exec.Command("go", "build", "-o", helper, "../cmd/sshmesh-pam")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		testkit.SkipOrFail(t, fmt.Sprintf("cannot build the PAM helper (needs cgo and libpam0g-dev): %v\n%s", err, out))
	}
	for _, m := range []string{"pam_nologin", "pam_access", "pam_loginuid", "pam_mkhomedir", "pam_limits", "pam_env", "pam_permit"} {
		if !pamModuleExists(m) {
			testkit.SkipOrFail(t, m+".so is not installed (Debian: libpam-modules)")
		}
	}
	s := &pamStack{dir: dir, nologin: filepath.Join(dir, "nologin")}
	s.rules = HostRules{PAMService: "sshmesh-test", PAMHelper: helper, PAMConfDir: dir}
	writeFile(t, filepath.Join(dir, "access.conf"), "-:"+deny+":ALL\n+:ALL:ALL\n")
	writeFile(t, filepath.Join(dir, "limits.conf"), allow+" - nofile 4321\n")
	writeFile(t, filepath.Join(dir, "environment"), "SSHMESH_PAM_TEST=from-pam-env\n")
	writeFile(t, filepath.Join(dir, "pam_env.conf"), "LD_PRELOAD DEFAULT=/nonexistent/evil.so\nHOME OVERRIDE=/nonexistent\n")
	writeFile(t, filepath.Join(dir, "sshmesh-test"), fmt.Sprintf(`# sshmesh's test stack: account and session, no auth.
account  requisite pam_nologin.so file=%[1]s/nologin
account  required  pam_access.so accessfile=%[1]s/access.conf
account  required  pam_permit.so
session  required  pam_loginuid.so
session  required  pam_mkhomedir.so skel=/etc/skel umask=0077
session  required  pam_limits.so conf=%[1]s/limits.conf
session  required  pam_env.so conffile=%[1]s/pam_env.conf envfile=%[1]s/environment readenv=1 user_readenv=0
`, dir))
	return s
}

func pamModuleExists(name string) bool {
	for _, d := range []string{"/lib/x86_64-linux-gnu/security", "/usr/lib/x86_64-linux-gnu/security", "/lib/security", "/usr/lib/security", "/usr/lib64/security", "/lib/aarch64-linux-gnu/security", "/usr/lib/aarch64-linux-gnu/security"} {
		if _, err := os.Stat(filepath.Join(d, name+".so")); err == nil {
			return true
		}
	}
	return false
}

// TestPAMAccount: pam_acct_mgmt decides, with PAM's message: pam_access
// refuses one user, pam_nologin everyone while its file exists.
func TestPAMAccount(t *testing.T) {
	allow, deny := testUser(t), testUser(t)
	s := newPAMStack(t, allow.Name, deny.Name)
	ctx := t.Context()
	if err := CheckAccount(ctx, s.rules, Account{User: allow, Remote: mustAddrPort("100.64.0.2:1")}); err != nil {
		t.Errorf("allowed user refused: %v", err)
	}
	err := CheckAccount(ctx, s.rules, Account{User: deny, Remote: mustAddrPort("100.64.0.2:1")})
	var ce *ClientError
	if !errors.As(err, &ce) || !errors.Is(err, ErrAccountRefused) || !strings.Contains(ce.Msg, "Permission denied") {
		t.Errorf("pam_access: err %v, want a refusal with PAM's reason", err)
	}
	writeFile(t, s.nologin, "PAM says: down for maintenance\n")
	err = CheckAccount(ctx, s.rules, Account{User: allow})
	if !errors.As(err, &ce) || !strings.Contains(ce.Msg, "PAM says: down for maintenance") {
		t.Errorf("pam_nologin: err %v, want the file's text", err)
	}
}

// TestPAMSession: the session runs inside PAM's: the limits pam_limits
// set, pam_env's variable (but not the loader's or HOME), pam_loginuid's
// login uid, and a home pam_mkhomedir made for a user without one; the
// exit status comes through the helper.
func TestPAMSession(t *testing.T) {
	u := testUser(t)
	s := newPAMStack(t, u.Name, "nobody-denied")
	if err := os.RemoveAll(u.Home); err != nil {
		t.Fatal(err)
	}
	r := run(t, testConfig(t), Request{User: u.Name, HostRules: s.rules,
		Command: `ulimit -n; echo "pam=$SSHMESH_PAM_TEST preload=$LD_PRELOAD home=$HOME"; cat /proc/self/loginuid; echo; pwd; id -u; exit 7`})
	want := fmt.Sprintf("4321\npam=from-pam-env preload= home=%s\n%s\n%s\n%s\n", u.Home, u.Uid, u.Home, u.Uid)
	if r.stdout != want || r.exit.Code != 7 {
		t.Errorf("session: exit %d, stdout %q, stderr %q; want 7 and %q", r.exit.Code, r.stdout, r.stderr, want)
	}
	if !strings.Contains(r.stderr, "Creating directory") {
		t.Errorf("pam_mkhomedir's message did not reach the client: stderr %q", r.stderr)
	}
	st, err := os.Stat(u.Home)
	if err != nil || !st.IsDir() || fmt.Sprint(st.Sys().(*syscall.Stat_t).Uid) != u.Uid {
		t.Errorf("pam_mkhomedir made no home owned by the user: %v", err)
	}

	// With a terminal: it is the program's controlling terminal (tty_nr,
	// field 7 of /proc/PID/stat, is not 0).
	r = run(t, testConfig(t), Request{User: u.Name, HostRules: s.rules, Pty: &Pty{Term: "dumb"},
		Command: `read pid comm state ppid pgrp sid ttynr rest < /proc/self/stat; [ "$ttynr" != 0 ] && echo has-ctty; tty`})
	if !strings.Contains(r.stdout, "has-ctty\r\n/dev/pts/") {
		t.Errorf("pty session under PAM: stdout %q, want a controlling terminal", r.stdout)
	}

	// Killed by a signal: the exit says so, through the helper.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out testkit.Buffer
	p, err := start(ctx, Request{User: u.Name, HostRules: s.rules, Command: "echo up; exec sleep 60", Stdout: &out}, testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	out.WaitFor(t, "up")
	if got := strings.TrimSpace(string(readFile(t, fmt.Sprintf("/proc/%d/loginuid", p.Pid())))); got != u.Uid {
		t.Errorf("/proc/<child>/loginuid = %q, want %s", got, u.Uid)
	}
	if err := p.Signal("TERM"); err != nil {
		t.Fatal(err)
	}
	if exit, _ := p.Wait(); exit != (Exit{Code: 143, Signal: "TERM"}) {
		t.Errorf("exit %+v, want TERM", exit)
	}
}
