//go:build linux

package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// newPAMStack is testkit's test stack as HostRules.
func newPAMStack(t *testing.T, allow, deny string) (HostRules, *testkit.PAMStack) {
	t.Helper()
	st := testkit.NewPAMStack(t, allow, deny)
	return HostRules{PAMService: st.Service, PAMHelper: st.Helper, PAMConfDir: st.Dir}, st
}

// TestPAMAccount: pam_acct_mgmt decides, with PAM's message: pam_access
// refuses one user, pam_nologin everyone while its file exists.
func TestPAMAccount(t *testing.T) {
	allow, deny := testUser(t), testUser(t)
	rules, st := newPAMStack(t, allow.Name, deny.Name)
	ctx := t.Context()
	if _, err := CheckAccount(ctx, rules, Account{User: allow, Remote: mustAddrPort("100.64.0.2:1")}); err != nil {
		t.Errorf("allowed user refused: %v", err)
	}
	_, err := CheckAccount(ctx, rules, Account{User: deny, Remote: mustAddrPort("100.64.0.2:1")})
	var ce *ClientError
	if !errors.As(err, &ce) || !errors.Is(err, ErrAccountRefused) || !strings.Contains(ce.Msg, "Permission denied") {
		t.Errorf("pam_access: err %v, want a refusal with PAM's reason", err)
	}
	writeFile(t, st.Nologin, "PAM says: down for maintenance\n")
	_, err = CheckAccount(ctx, rules, Account{User: allow})
	if !errors.As(err, &ce) || !strings.Contains(ce.Msg, "PAM says: down for maintenance") {
		t.Errorf("pam_nologin: err %v, want the file's text", err)
	}
	// Root is let in, with the text as a notice.
	root, err := LookupUser("root")
	if err != nil {
		t.Fatal(err)
	}
	notice, err := CheckAccount(ctx, rules, Account{User: root})
	if err != nil || !strings.Contains(notice, "PAM says: down for maintenance") {
		t.Errorf("pam_nologin for root: notice %q, err %v; want let in with the text", notice, err)
	}
}

// TestPAMSession: the session runs inside PAM's: the limits pam_limits
// set, pam_env's variable (but not the loader's or HOME), pam_loginuid's
// login uid, and a home pam_mkhomedir made for a user without one; the
// exit status comes through the helper.
func TestPAMSession(t *testing.T) {
	u := testUser(t)
	rules, _ := newPAMStack(t, u.Name, "nobody-denied")
	if err := os.RemoveAll(u.Home); err != nil {
		t.Fatal(err)
	}
	var limitBefore syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limitBefore)
	loginUIDBefore, _ := os.ReadFile("/proc/self/loginuid")
	defer func() {
		// PAM ran in the helper: the server's own limits and loginuid
		// are as they were.
		var limit syscall.Rlimit
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit)
		loginUID, _ := os.ReadFile("/proc/self/loginuid")
		if limit != limitBefore || string(loginUID) != string(loginUIDBefore) {
			t.Errorf("the server's nofile limit went from %+v to %+v, its loginuid from %s to %s", limitBefore, limit, loginUIDBefore, loginUID)
		}
	}()
	r := run(t, testConfig(t), Request{User: u.Name, HostRules: rules,
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

	// ~/.ssh/rc runs first, inside the PAM session too.
	if err := os.MkdirAll(filepath.Join(u.Home, ".ssh"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(u.Home, ".ssh", "rc"), "echo rc $(id -un) $SSHMESH_PAM_TEST\n")
	r = run(t, testConfig(t), Request{User: u.Name, HostRules: rules, Command: "echo main"})
	if want := "rc " + u.Name + " from-pam-env\nmain\n"; r.stdout != want {
		t.Errorf("~/.ssh/rc under PAM: stdout %q, stderr %q; want %q", r.stdout, r.stderr, want)
	}
	os.Remove(filepath.Join(u.Home, ".ssh", "rc"))

	// With a terminal: it is the program's controlling terminal (tty_nr,
	// field 7 of /proc/PID/stat, is not 0).
	r = run(t, testConfig(t), Request{User: u.Name, HostRules: rules, Pty: &Pty{Term: "dumb"},
		Command: `read pid comm state ppid pgrp sid ttynr rest < /proc/self/stat; [ "$ttynr" != 0 ] && echo has-ctty; tty`})
	if !strings.Contains(r.stdout, "has-ctty\r\n/dev/pts/") {
		t.Errorf("pty session under PAM: stdout %q, want a controlling terminal", r.stdout)
	}

	// Killed by a signal: the exit says so, through the helper.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out testkit.Buffer
	p, err := start(ctx, Request{User: u.Name, HostRules: rules, Command: "echo up; exec sleep 60", Stdout: &out}, testConfig(t))
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

// TestPAMExampleStack: the example service file shipped in
// docs/pam.d/sshmesh, with this host's common-account and common-session
// (copied next to it, so the host's /etc/pam.d is only read), lets a user
// in and runs a session, and refuses an expired account. pam_systemd, where common-session has it, fails
// quietly without systemd as PID 1 (it is optional there).
func TestPAMExampleStack(t *testing.T) {
	u := testUser(t)
	helper := testkit.BuildPAMHelper(t)
	dir := t.TempDir()
	for _, f := range []string{"common-account", "common-session"} {
		b, err := os.ReadFile("/etc/pam.d/" + f)
		if err != nil {
			testkit.SkipOrFail(t, "this host has no Debian-style /etc/pam.d/"+f)
		}
		writeFile(t, filepath.Join(dir, f), string(b))
	}
	writeFile(t, filepath.Join(dir, "sshmesh"), string(readFile(t, "../docs/pam.d/sshmesh")))
	rules := HostRules{PAMService: "sshmesh", PAMHelper: helper, PAMConfDir: dir}
	if _, err := CheckAccount(t.Context(), rules, Account{User: u, Remote: mustAddrPort("100.64.0.2:1")}); err != nil {
		t.Fatalf("the example stack refuses a plain user: %v", err)
	}
	// common-account's pam_unix refuses an expired account, with its message.
	expired := testUser(t)
	command(t, "usermod", "--expiredate", "1", expired.Name)
	_, err := CheckAccount(t.Context(), rules, Account{User: expired})
	var ce *ClientError
	if !errors.As(err, &ce) || !strings.Contains(ce.Msg, "expired") {
		t.Errorf("an expired account under the example stack: %v, want pam_unix's refusal", err)
	}
	r := run(t, testConfig(t), Request{User: u.Name, HostRules: rules, Command: "id -un; cat /proc/self/loginuid"})
	if want := u.Name + "\n" + u.Uid; r.stdout != want || r.exit.Code != 0 {
		t.Errorf("session under the example stack: exit %d, stdout %q, stderr %q; want %q", r.exit.Code, r.stdout, r.stderr, want)
	}
}

// TestPAMHelperSafePath: the helper, which runs as root, is refused when
// someone else could have replaced it: a file or a directory above it
// writable by others, or owned by another user.
func TestPAMHelperSafePath(t *testing.T) {
	testkit.NeedRoot(t)
	dir := t.TempDir()
	helper := filepath.Join(dir, "sshmesh-pam")
	writeFile(t, helper, "#!/bin/sh\n")
	os.Chmod(helper, 0o755)
	if _, err := (HostRules{PAMService: "x", PAMHelper: helper}).helper(); err != nil {
		t.Fatalf("a root-owned helper in a private directory: %v", err)
	}
	os.Chmod(helper, 0o757)
	if _, err := (HostRules{PAMService: "x", PAMHelper: helper}).helper(); err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("a world-writable helper: err %v", err)
	}
	os.Chmod(helper, 0o755)
	os.Chmod(dir, 0o777)
	if _, err := (HostRules{PAMService: "x", PAMHelper: helper}).helper(); err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("a helper in a world-writable directory: err %v", err)
	}
	os.Chmod(dir, 0o700)
	os.Chown(helper, 65534, 65534)
	if _, err := (HostRules{PAMService: "x", PAMHelper: helper}).helper(); err == nil || !strings.Contains(err.Error(), "not root") {
		t.Errorf("a helper owned by nobody: err %v", err)
	}
	// A symlink in a safe directory to a helper in a directory others may
	// write to (they could swap the directory between check and exec): the
	// directories checked are those of the file the link leads to.
	os.Chown(helper, 0, 0)
	open := filepath.Join(t.TempDir(), "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	target := filepath.Join(open, "sshmesh-pam")
	writeFile(t, target, "#!/bin/sh\n")
	os.Chmod(target, 0o755)
	link := filepath.Join(dir, "sshmesh-pam-link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := (HostRules{PAMService: "x", PAMHelper: link}).helper(); err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("a symlink to a helper in a world-writable directory: err %v", err)
	}
}
