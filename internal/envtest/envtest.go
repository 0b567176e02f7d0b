// Package envtest holds the one table of the environment rule
// ([github.com/sshmesh/sshmesh/policy.EnvAllowed]). Every layer that applies
// the rule runs it: policy itself, the server (an SSH client's env requests
// under a rule whose acceptEnv is "*") and package session (the child's
// environment built from [github.com/sshmesh/sshmesh/session.Request.Env]).
// Only tests import it.
package envtest

import "strings"

// Case is one variable a client sends, under a rule that accepts "*".
type Case struct {
	Name, Value string
	// Accepted reports whether the variable reaches the session.
	Accepted bool
}

// KeyValue reports whether the case can be written as one NAME=VALUE
// entry, the form package session takes: a name holding '=' cannot.
func (c Case) KeyValue() bool { return !strings.Contains(c.Name, "=") }

// Cases returns the table, a fresh copy each time. Names are distinct, so a
// layer's output can be searched for NAME=VALUE; fewer than 64 cases are
// accepted (the server's limit per session), so one session runs them all.
func Cases() []Case {
	long := strings.Repeat("x", 32<<10)
	return []Case{
		// Accepted: ordinary names, any case, odd but legal values.
		{"LANG", "C.UTF-8", true},
		{"LC_ALL", "C", true},
		{"LC_TIME", "", true},
		{"GIT_AUTHOR_NAME", "Ann", true},
		{"TERM_PROGRAM", "iTerm.app", true},
		{"COLORTERM", "truecolor", true},
		{"lang", "lower-case-is-a-different-name", true},
		{"_UNDERSCORE", "u", true},
		{"NEWLINE_OK", "a\nb", true},
		{"LONGEST_VALUE", long, true},
		{"N" + strings.Repeat("x", 255), "longest-name", true},

		// The loader, in any case.
		{"LD_PRELOAD", "/x.so", false},
		{"ld_preload", "/x.so lower", false},
		{"Ld_Library_Path", "/x mixed", false},
		{"LD_AUDIT", "/x.so audit", false},
		{"DYLD_INSERT_LIBRARIES", "/x.dylib", false},
		{"GLIBC_TUNABLES", "glibc.malloc.check=3", false},
		{"MALLOC_CHECK_", "3", false},
		{"GCONV_PATH", "/x gconv", false},
		{"GETCONF_DIR", "/x getconf", false},
		// Shells.
		{"BASH_ENV", "/x bash", false},
		{"ENV", "/x sh", false},
		{"env", "/x sh lower", false},
		{"IFS", "/", false},
		{"PS4", "$(id)", false},
		{"SHELLOPTS", "xtrace", false},
		{"EXECIGNORE", "/usr/bin/*", false},
		{"ZDOTDIR", "/x zsh", false},
		// Names the session sets itself.
		{"PATH", "/x path", false},
		{"path", "/x path lower", false},
		{"HOME", "/x home", false},
		{"USER", "root", false},
		{"SHELL", "/x shell", false},
		{"TERM", "vt100", false},
		{"XDG_RUNTIME_DIR", "/x run", false},
		{"SSH_AUTH_SOCK", "/x agent", false},
		{"SSH_CONNECTION", "forged", false},
		{"SSH_ORIGINAL_COMMAND", "forged command", false},
		{"SSH_SK_PROVIDER", "/x sk.so", false},
		// Runtimes and tools that load or run what a variable names.
		{"PYTHONPATH", "/x py", false},
		{"PERL5OPT", "-Mx", false},
		{"RUBYOPT", "-rx", false},
		{"NODE_OPTIONS", "--require /x", false},
		{"GIT_SSH_COMMAND", "/x git", false},
		{"GIT_CONFIG_PARAMETERS", "'core.pager=/x'", false},
		{"EDITOR", "/x editor", false},
		{"PAGER", "/x pager", false},
		{"TMPDIR", "/x tmp", false},
		{"OPENSSL_CONF", "/x ssl", false},

		// Malformed names and values.
		{"BASH_FUNC_ls%%", "() { :; }", false},
		{"A=B", "equals", false},
		{"A\nB", "newline", false},
		{"A-B", "dash", false},
		{"1X", "digit", false},
		{"", "empty", false},
		{"N" + strings.Repeat("x", 256), "name-too-long", false},
		{"NUL_VALUE", "a\x00b", false},
		{"LONG_VALUE", long + "y", false},
	}
}
