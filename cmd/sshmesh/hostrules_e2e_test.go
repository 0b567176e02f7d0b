package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/session"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// These tests log in with the stock ssh client through `sshmesh nc` to a
// Server whose host applies its own rules (issue 27): without PAM, and
// with a PAM stack of the test's own.

// hostRulesPolicy maps each name in users to the local account of the same
// name, and "root" to root.
func hostRulesPolicy(users ...string) policy.Policy {
	return policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
		for _, u := range append(users, "root") {
			if r.User == u {
				return policy.Decision{Action: policy.Accept, LocalUser: u, Rule: "ssh[0]"}, nil
			}
		}
		return policy.Decision{}, nil
	})
}

// keepLastlog puts uid's lastlog record back as it was at the end of the
// test: logins through the default handler write the host's lastlog.
func keepLastlog(t *testing.T, uid int) {
	const size = 292 // glibc's struct lastlog
	old := make([]byte, size)
	if f, err := os.Open("/var/log/lastlog"); err == nil {
		f.ReadAt(old, int64(uid)*size)
		f.Close()
	}
	t.Cleanup(func() {
		f, err := os.OpenFile("/var/log/lastlog", os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		f.WriteAt(old, int64(uid)*size)
	})
}

// TestHostRulesWithoutPAM: /etc/nologin (here a file of the test's)
// refuses everyone but root with its text and exit 255; an expired
// account is refused; the session carries the user's audit login uid; an
// interactive login shows the last one.
func TestHostRulesWithoutPAM(t *testing.T) {
	u, expired := newLoginUser(t), newLoginUser(t)
	mustRun(t, "usermod", "--expiredate", "1", expired.Name) // as passwd(1) says to lock an account
	nologin := filepath.Join(t.TempDir(), "nologin")
	ls := startLoginServer(t, hostRulesPolicy(u.Name, expired.Name), func(s *sshmesh.Server) {
		s.HostRules.Nologin = []string{nologin}
	})
	keepLastlog(t, u.UID)
	target := u.Name + "@" + ls.host

	if _, err := os.Stat("/proc/self/loginuid"); err == nil {
		if out := ls.mustSSH(t, tool{}, target, "cat /proc/self/loginuid"); out != strconv.Itoa(u.UID) {
			t.Errorf("the session's loginuid is %q, want %d", out, u.UID)
		}
	}

	ls.mustSSH(t, tool{stdin: strings.NewReader("exit 0\n")}, "-tt", target)
	out := ls.mustSSH(t, tool{stdin: strings.NewReader("exit 0\n")}, "-tt", target)
	if !regexp.MustCompile(`Last login: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} from 100\.64\.0\.\d+\r\n`).MatchString(out) {
		t.Errorf("second interactive login shows no last login: %q", out)
	}

	if err := os.WriteFile(nologin, []byte("e2e: the host is down for maintenance\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := stockSSH(t, ls.conf, target, "true")
	if code != 255 || !strings.Contains(errOut, "e2e: the host is down for maintenance") {
		t.Errorf("nologin: exit %d, stderr %q; want 255 and the file's text", code, errOut)
	}
	if out, errOut, code := stockSSH(t, ls.conf, "root@"+ls.host, "echo root-in"); code != 0 || out != "root-in\n" {
		t.Errorf("root with nologin: exit %d, stdout %q, stderr %q; want root let in", code, out, errOut)
	}
	os.Remove(nologin)

	_, errOut, code = stockSSH(t, ls.conf, expired.Name+"@"+ls.host, "true")
	if code != 255 || !strings.Contains(errOut, "Your account has expired") {
		t.Errorf("expired account: exit %d, stderr %q; want 255 and a message", code, errOut)
	}
	if !strings.Contains(ls.log.String(), "login refused by the host") {
		t.Errorf("the refusals are not in the log:\n%s", ls.log.String())
	}
}

// TestHostRulesPAM: with PAM, the host's account rules refuse (pam_access
// with PAM's reason, pam_nologin with its text; exit 255) and its session
// rules apply (pam_limits' nofile in `ulimit -n`, pam_env's variable but not
// a loader variable, pam_loginuid, the account's uid, gid and groups,
// pam_mkhomedir's new home), through the
// stock client. pam_systemd is not tested: see testkit.PAMStack.
func TestHostRulesPAM(t *testing.T) {
	u, denied, homeless := newLoginUser(t), newLoginUser(t), newLoginUser(t)
	st := testkit.NewPAMStack(t, u.Name, denied.Name)
	if err := os.RemoveAll(homeless.Home); err != nil {
		t.Fatal(err)
	}
	ls := startLoginServer(t, hostRulesPolicy(u.Name, denied.Name, homeless.Name), func(s *sshmesh.Server) {
		s.HostRules = session.HostRules{PAMService: st.Service, PAMHelper: st.Helper, PAMConfDir: st.Dir}
	})

	out := ls.mustSSH(t, tool{}, u.Name+"@"+ls.host, `ulimit -n; echo "$SSHMESH_PAM_TEST [$LD_PRELOAD] $HOME"; cat /proc/self/loginuid; echo; id`)
	want := "4321\nfrom-pam-env [] " + u.Home + "\n" + strconv.Itoa(u.UID) + "\n" + u.ID + "\n"
	if out != want {
		t.Errorf("PAM session:\n got %q\nwant %q", out, want)
	}

	_, errOut, code := stockSSH(t, ls.conf, denied.Name+"@"+ls.host, "true")
	if code != 255 || !strings.Contains(errOut, "PAM account rules refuse this login: Permission denied") {
		t.Errorf("pam_access: exit %d, stderr %q; want 255 and PAM's reason", code, errOut)
	}

	out = ls.mustSSH(t, tool{}, homeless.Name+"@"+ls.host, "pwd; stat -c %U "+homeless.Home)
	if out != homeless.Home+"\n"+homeless.Name+"\n" {
		t.Errorf("pam_mkhomedir: %q, want the new home, owned by the user", out)
	}

	if err := os.WriteFile(st.Nologin, []byte("e2e: PAM says the host is down\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// pam_nologin lets root in, and says why others are not: shown with
	// the interactive login, as sshd shows it.
	keepLastlog(t, 0)
	out = ls.mustSSH(t, tool{stdin: strings.NewReader("exit 0\n")}, "-tt", "root@"+ls.host)
	if !strings.Contains(out, "e2e: PAM says the host is down") {
		t.Errorf("root's interactive login under pam_nologin: %q, want the file's text", out)
	}
	_, errOut, code = stockSSH(t, ls.conf, u.Name+"@"+ls.host, "true")
	if code != 255 || !strings.Contains(errOut, "e2e: PAM says the host is down") {
		t.Errorf("pam_nologin: exit %d, stderr %q; want 255 and the file's text", code, errOut)
	}
	if !strings.Contains(ls.log.String(), "login refused by the host") {
		t.Errorf("the refusals are not in the log:\n%s", ls.log.String())
	}
}

// TestServePAM: `serve --pam --pam-service NAME` finds the sshmesh-pam
// helper next to itself and runs /etc/pam.d/NAME for each login; without
// the helper it refuses to start. (Refusals are TestHostRulesPAM's: the
// fixture's policy lets only root in, whom pam_nologin lets in too.) The
// service file is the test stack under
// a name of its own in /etc/pam.d (serve has no flag for another PAM
// directory), removed when the test ends.
func TestServePAM(t *testing.T) {
	f := newServiceFixture(t)
	st := testkit.NewPAMStack(t, "root", "nobody")

	// Without the helper: a clear error, before serving.
	missing := filepath.Join(t.TempDir(), "no-such-helper")
	out, err := exec.Command(binPath, append([]string{"serve", "--state", t.TempDir(), "--pam", "--pam-helper", missing}, f.serveArgs()...)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "serve --pam") || !strings.Contains(string(out), missing) {
		t.Errorf("serve --pam without its helper: err %v, output %q; want an error naming the helper", err, out)
	}

	service := "sshmesh-e2e-" + strconv.Itoa(os.Getpid())
	etc := filepath.Join("/etc/pam.d", service)
	stack, err := os.ReadFile(filepath.Join(st.Dir, st.Service))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(etc, stack, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(etc) })
	helper := filepath.Join(filepath.Dir(binPath), "sshmesh-pam")
	if err := os.Link(st.Helper, helper); err != nil {
		if b, rerr := os.ReadFile(st.Helper); rerr != nil || os.WriteFile(helper, b, 0o755) != nil {
			t.Fatalf("cannot put the helper next to sshmesh: %v", err)
		}
	}
	t.Cleanup(func() { os.Remove(helper) })

	var log sshmeshtest.Buffer
	startServe(t, &log, nil, f.serveArgs("--pam", "--pam-service", service)...)
	if out, errOut, code := stockSSH(t, f.clientConf, "root@"+f.server.Addr.String(), `ulimit -n; echo "$SSHMESH_PAM_TEST"`); code != 0 || out != "4321\nfrom-pam-env\n" {
		t.Errorf("ssh root@ through serve --pam: exit %d, stdout %q, stderr %q; want the PAM stack's limit and variable", code, out, errOut)
	}

}
