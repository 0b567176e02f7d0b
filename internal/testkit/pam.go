package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// PAMStack is a PAM service for tests, in a directory of its own that PAM
// reads through pam_start_confdir, with every file its modules read next
// to it: the host's /etc/pam.d and /etc/security are never touched.
//
// Account: pam_nologin (the file Nologin, absent until a test writes it)
// and pam_access (refusing the user Deny). Session: pam_loginuid,
// pam_mkhomedir, pam_limits (nofile 4321 for the user Allow) and pam_env
// (SSHMESH_PAM_TEST=from-pam-env, and LD_PRELOAD and HOME, which sshmesh
// must not pass on).
//
// pam_systemd (a logind session, XDG_RUNTIME_DIR) is not in it: it needs
// systemd as PID 1 and D-Bus, which CI containers do not run;
// docs/operations.md says how to check it on a systemd host.
type PAMStack struct {
	Service string // the service name
	Dir     string // the PAM configuration directory
	Helper  string // the sshmesh-pam binary, built for the test
	Nologin string // pam_nologin's file
}

// NewPAMStack builds the sshmesh-pam helper and writes the stack. It
// skips (or fails under CI) without root, cgo, the PAM headers or the
// modules.
func NewPAMStack(tb testing.TB, allow, deny string) *PAMStack {
	tb.Helper()
	NeedRoot(tb)
	for _, m := range []string{"pam_nologin", "pam_access", "pam_loginuid", "pam_mkhomedir", "pam_limits", "pam_env", "pam_permit", "pam_deny"} {
		if !pamModuleExists(m) {
			SkipOrFail(tb, m+".so is not installed (Debian: libpam-modules)")
		}
	}
	dir := tb.TempDir()
	s := &PAMStack{Service: "sshmesh-test", Dir: dir, Helper: BuildPAMHelper(tb), Nologin: filepath.Join(dir, "nologin")}
	files := map[string]string{
		"access.conf":  "-:" + deny + ":ALL\n+:ALL:ALL\n",
		"limits.conf":  allow + " - nofile 4321\n",
		"environment":  "SSHMESH_PAM_TEST=from-pam-env\n",
		"pam_env.conf": "LD_PRELOAD DEFAULT=/nonexistent/evil.so\nHOME OVERRIDE=/nonexistent\n",
		s.Service: fmt.Sprintf(`# sshmesh's test stack: account and session; auth only denies.
auth     required  pam_deny.so
account  requisite pam_nologin.so file=%[1]s/nologin
account  required  pam_access.so accessfile=%[1]s/access.conf
account  required  pam_permit.so
session  required  pam_loginuid.so
session  required  pam_mkhomedir.so skel=/etc/skel umask=0077
session  required  pam_limits.so conf=%[1]s/limits.conf
session  required  pam_env.so conffile=%[1]s/pam_env.conf envfile=%[1]s/environment readenv=1 user_readenv=0
`, dir),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// BuildPAMHelper builds cmd/sshmesh-pam for the test and returns its
// path; it skips (or fails under CI) without root, cgo or the PAM headers.
func BuildPAMHelper(tb testing.TB) string {
	tb.Helper()
	NeedRoot(tb)
	helper := filepath.Join(tb.TempDir(), "sshmesh-pam")
	build := exec.Command("go", "build", "-o", helper, "github.com/sshmesh/sshmesh/cmd/sshmesh-pam")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		SkipOrFail(tb, fmt.Sprintf("cannot build the PAM helper (needs cgo and libpam0g-dev): %v\n%s", err, out))
	}
	return helper
}

func pamModuleExists(name string) bool {
	dirs, _ := filepath.Glob("/usr/lib/*/security")
	more, _ := filepath.Glob("/lib/*/security")
	dirs = append(append(dirs, more...), "/lib/security", "/usr/lib/security", "/usr/lib64/security", "/lib64/security")
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, name+".so")); err == nil {
			return true
		}
	}
	return false
}
