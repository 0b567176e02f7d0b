package policy

import (
	"testing"

	"github.com/sshmesh/sshmesh/internal/envtest"
)

// TestEnvRule runs the environment rule's one table (the server and package
// session run it too) against EnvAllowed under a rule that accepts "*".
func TestEnvRule(t *testing.T) {
	for _, c := range envtest.Cases() {
		if got := EnvAllowed([]string{"*"}, c.Name, c.Value); got != c.Accepted {
			t.Errorf("EnvAllowed([*], %.40q, %.40q) = %v, want %v", c.Name, c.Value, got, c.Accepted)
		}
	}
}

func TestEnvAllowed(t *testing.T) {
	tests := []struct {
		patterns []string
		name     string
		want     bool
	}{
		{[]string{"LANG"}, "LANG", true},
		{[]string{"LANG"}, "LANGUAGE", false},
		{[]string{"LC_*"}, "LC_ALL", true},
		{[]string{"LC_*"}, "LC_", true},
		{[]string{"LC_?"}, "LC_A", true},
		{[]string{"LC_?"}, "LC_AB", false},
		{[]string{"*_TOKEN"}, "GH_TOKEN", true},
		{[]string{"A*B*C"}, "AxxBxxC", true},
		{[]string{"A*B*C"}, "AxxBxx", false},
		{nil, "LANG", false},
		{[]string{"*"}, "TERM_PROGRAM", true},
		// Loader and session names: never, whatever the patterns.
		{[]string{"*"}, "LD_PRELOAD", false},
		{[]string{"*"}, "ld_preload", false},
		{[]string{"LD_*"}, "LD_LIBRARY_PATH", false},
		{[]string{"*"}, "DYLD_INSERT_LIBRARIES", false},
		{[]string{"*"}, "BASH_ENV", false},
		{[]string{"*"}, "ENV", false},
		{[]string{"*"}, "PATH", false},
		{[]string{"*"}, "IFS", false},
		{[]string{"*"}, "SHELLOPTS", false},
		{[]string{"*"}, "BASHOPTS", false},
		{[]string{"*"}, "PS4", false},
		{[]string{"*"}, "GCONV_PATH", false},
		{[]string{"*"}, "LOCPATH", false},
		{[]string{"*"}, "NLSPATH", false},
		{[]string{"*"}, "MALLOC_CHECK_", false},
		{[]string{"*"}, "GLIBC_TUNABLES", false},
		{[]string{"*"}, "PYTHONPATH", false},
		{[]string{"*"}, "PERL5OPT", false},
		{[]string{"*"}, "NODE_OPTIONS", false},
		{[]string{"*"}, "GIT_SSH_COMMAND", false},
		{[]string{"*"}, "GIT_CONFIG_PARAMETERS", false},
		{[]string{"GIT_*"}, "GIT_AUTHOR_NAME", true},
		{[]string{"*"}, "HOME", false},
		// Refused by the session layer before it shared this rule.
		{[]string{"*"}, "EXECIGNORE", false},
		{[]string{"*"}, "GETCONF_DIR", false},
		{[]string{"*"}, "TERM", false},
		{[]string{"*"}, "XDG_RUNTIME_DIR", false},
		{[]string{"*"}, "SSH_AUTH_SOCK", false},
		{[]string{"*"}, "SSH_CONNECTION", false},
		{[]string{"SSH_*"}, "SSH_ORIGINAL_COMMAND", false},
		// Malformed names.
		{[]string{"*"}, "BASH_FUNC_x%%", false},
		{[]string{"*"}, "A=B", false},
		{[]string{"*"}, "1X", false},
		{[]string{"*"}, "", false},
	}
	for _, tt := range tests {
		if got := EnvAllowed(tt.patterns, tt.name, "x"); got != tt.want {
			t.Errorf("EnvAllowed(%q, %q) = %v, want %v", tt.patterns, tt.name, got, tt.want)
		}
	}
}

func TestEnvAllowedNoAllocs(t *testing.T) {
	pats := []string{"LANG", "LC_*", "GIT_*"}
	if n := testing.AllocsPerRun(100, func() { EnvAllowed(pats, "GIT_AUTHOR_NAME", "Ann") }); n != 0 {
		t.Errorf("EnvAllowed allocates %v times", n)
	}
}

func TestCheckEnvPattern(t *testing.T) {
	for p, ok := range map[string]bool{
		"LANG": true, "LC_*": true, "*": true, "L*": true, "GIT_*": true,
		"LD_PRELOAD": false, "LD_*": false, "ld_*": false, "DYLD_*": false, "PATH": false, "MALLOC_*": false,
		"SSH_*": false, "TERM": false,
		"": false, "A-B": false, "A B": false,
	} {
		if err := checkEnvPattern(p); (err == nil) != ok {
			t.Errorf("checkEnvPattern(%q) = %v, want ok %v", p, err, ok)
		}
	}
}

func TestForwardAllowed(t *testing.T) {
	tests := []struct {
		patterns []string
		host     string
		port     int
		want     bool
	}{
		{[]string{"localhost:5432"}, "localhost", 5432, true},
		{[]string{"localhost:5432"}, "LOCALHOST", 5432, true},
		{[]string{"localhost:5432"}, "localhost", 5433, false},
		{[]string{"localhost:5432"}, "127.0.0.1", 5432, false}, // names are not resolved
		{[]string{"10.0.0.0/8:*"}, "10.1.2.3", 22, true},
		{[]string{"10.0.0.0/8:*"}, "11.1.2.3", 22, false},
		{[]string{"10.0.0.0/8:*"}, "ten.example", 22, false},
		{[]string{"[fd00::/8]:22"}, "fd00::1", 22, true},
		{[]string{"[fd00::1]:22"}, "fd00::1", 22, true},
		{[]string{"192.168.1.1:80"}, "192.168.1.1", 80, true},
		{[]string{"192.168.1.1:80"}, "::ffff:192.168.1.1", 80, true},
		{[]string{"*:8080"}, "anything", 8080, true},
		{[]string{"*:*"}, "anything", 1, true},
		{nil, "localhost", 22, false},
	}
	for _, tt := range tests {
		if got := ForwardAllowed(tt.patterns, tt.host, tt.port); got != tt.want {
			t.Errorf("ForwardAllowed(%q, %q, %d) = %v, want %v", tt.patterns, tt.host, tt.port, got, tt.want)
		}
	}
}

func TestCheckForwardPattern(t *testing.T) {
	for p, ok := range map[string]bool{
		"localhost:22": true, "10.0.0.0/8:*": true, "[fd00::/8]:22": true, "[fd00::1]:*": true, "*:*": true,
		"db.internal:5432": true, "1.2.3.4:80": true,
		"localhost": false, "localhost:0": false, "localhost:65536": false, "localhost:022": false,
		"10.0.0.0/33:22": false, "fd00::1:22": false, "bad_host!:22": false, ":22": false, "-x:22": false,
		"/run/user/*/db.sock": true, "/tmp/app.sock": true, "/tmp/[x": false, "relative.sock": false,
	} {
		if err := checkForwardPattern(p); (err == nil) != ok {
			t.Errorf("checkForwardPattern(%q) = %v, want ok %v", p, err, ok)
		}
	}
}
