package envrule

import (
	"strings"
	"testing"
)

// TestListTidy: every entry is upper case, appears once and is not already
// covered by a prefix, so the list says each thing in one place. (The rule
// itself is tested by the shared table in internal/envtest, which policy,
// the server and session run.)
func TestListTidy(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range deniedPrefixes {
		if p != strings.ToUpper(p) || seen[p] {
			t.Errorf("prefix %q: not upper case or listed twice", p)
		}
		seen[p] = true
	}
	for _, n := range deniedNames {
		if n != strings.ToUpper(n) || seen[n] || !ValidName(n) {
			t.Errorf("name %q: not an upper-case name or listed twice", n)
		}
		seen[n] = true
		if p := DeniedPrefix(n); p != "" {
			t.Errorf("name %q is already refused by the prefix %q", n, p)
		}
	}
}

// TestRefusedFromPAM: PAM may set the few session names its modules exist
// to set, and nothing else the client rule refuses.
func TestRefusedFromPAM(t *testing.T) {
	for name, want := range map[string]bool{
		"PATH": false, "MAIL": false, "XDG_RUNTIME_DIR": false, "TMPDIR": false,
		"XDG_SESSION_ID": false, "LANG": false, "SSHMESH_PAM_TEST": false,
		"LD_PRELOAD": true, "ld_preload": true, "BASH_ENV": true, "PYTHONPATH": true,
		"HOME": true, "USER": true, "SHELL": true, "LOGNAME": true, "TERM": true,
		"SSH_AUTH_SOCK": true, "Path": true, "1BAD": true, "": true,
	} {
		if got := RefusedFromPAM(name, "/x"); got != want {
			t.Errorf("RefusedFromPAM(%q) = %v, want %v", name, got, want)
		}
	}
	if !RefusedFromPAM("PATH", "/bin\x00/evil") || !RefusedFromPAM("PATH", strings.Repeat("x", MaxValue+1)) {
		t.Error("a PATH with a NUL byte or over MaxValue passes")
	}
}
