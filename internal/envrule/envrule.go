// Package envrule is the one rule for which environment variables an SSH
// client may never set, whatever a policy rule's acceptEnv says.
//
// Package policy owns the rule and documents it for users
// ([github.com/sshmesh/sshmesh/policy.EnvAllowed]); the server asks policy.
// The rule lives in this leaf only so that package session, which builds the
// child's environment and must not import policy (a package later in a
// connection's path never imports an earlier one), applies the very same
// rule to [github.com/sshmesh/sshmesh/session.Request.Env].
//
// # Case
//
// Names on the list are refused whatever their case: ld_preload and Path are
// refused like LD_PRELOAD and PATH. On Linux the loader and the shells read
// only the exact names, so exact matching would be enough there; but the
// accepted variables also reach handlers that may pass them to programs on
// systems whose environment names are case-insensitive (Windows: Path is
// PATH), or to shells that tie a lowercase variable to an uppercase one (csh's
// path and home, zsh's path). No program needs a lowercase variant of a
// refused name, so refusing it costs nothing. (A rule's acceptEnv patterns,
// in contrast, match names exactly as spelt: LANG allows LANG, not lang.)
package envrule

import "strings"

// Sanity bounds on one variable.
const (
	MaxName  = 256      // bytes in a name
	MaxValue = 32 << 10 // bytes in a value
)

// Variables that change how a program is loaded or which code it runs, or
// that the session sets itself. With a forced command or an appliance shell
// they would be a way out.
var (
	// deniedPrefixes refuse every name that starts with them.
	deniedPrefixes = []string{
		"LD_",        // ld.so: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ...
		"DYLD_",      // macOS dyld
		"MALLOC_",    // glibc malloc tunables, MALLOC_CHECK_, MALLOC_TRACE, ...
		"GCONV_",     // glibc iconv modules: GCONV_PATH
		"BASH_FUNC_", // exported bash functions
		"PYTHON",     // PYTHONPATH, PYTHONSTARTUP, PYTHONHOME, PYTHONUSERBASE, ...
		"PERL5",      // PERL5LIB, PERL5OPT, PERL5DB
		"RUBY",       // RUBYLIB, RUBYOPT
		"LUA_",       // LUA_PATH, LUA_CPATH, LUA_INIT
		"GIT_CONFIG", // GIT_CONFIG, GIT_CONFIG_PARAMETERS, GIT_CONFIG_GLOBAL, ...
		// Set by the session (SSH_CLIENT, SSH_CONNECTION, SSH_TTY,
		// SSH_AUTH_SOCK, SSH_ORIGINAL_COMMAND); SSH_ASKPASS runs a
		// program, SSH_SK_PROVIDER loads a library.
		"SSH_",
	}
	// deniedNames refuse exactly these names.
	deniedNames = []string{
		// Shells: startup files, options, word splitting, tracing, path search.
		"BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "IFS", "CDPATH",
		"PROMPT_COMMAND", "BASH_XTRACEFD", "GLOBIGNORE", "EXECIGNORE", "ZDOTDIR",
		// The session sets these itself (TERM from the pty-req).
		"PATH", "HOME", "SHELL", "USER", "LOGNAME", "MAIL", "TERM", "XDG_RUNTIME_DIR",
		// glibc: locale and conversion data, tunables, name resolution,
		// debugging, getconf's helper programs.
		"LOCPATH", "NLSPATH", "GLIBC_TUNABLES", "HOSTALIASES",
		"RESOLV_HOST_CONF", "RES_OPTIONS", "LOCALDOMAIN", "TZDIR", "GETCONF_DIR",
		"SEGFAULT_OUTPUT_NAME", "SEGFAULT_SIGNALS", "SEGFAULT_USE_ALTSTACK",
		// Language runtimes that load code from a path or an option.
		"PERLLIB", "NODE_OPTIONS", "NODE_PATH",
		"JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
		"TCLLIBPATH", "PHPRC", "PHP_INI_SCAN_DIR",
		// Tools that run another program named in a variable.
		"GIT_EXEC_PATH", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS",
		"GIT_EXTERNAL_DIFF", "GIT_PAGER", "GIT_EDITOR", "GIT_PROXY_COMMAND",
		"GIT_TEMPLATE_DIR", "PAGER", "EDITOR", "VISUAL", "BROWSER",
		// Libraries that load modules or configuration named by a variable.
		"OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES", "KRB5_CONFIG",
		"SSL_CERT_FILE", "SSL_CERT_DIR", "GTK_MODULES", "GST_PLUGIN_PATH",
		"LOCALE_ARCHIVE", "XDG_CONFIG_DIRS", "XDG_DATA_DIRS", "TMPDIR",
	}
)

// Refused reports whether a client may never set the variable name to
// value: the name is not [ValidName], or is on the list ([Denied]), or the
// value holds a NUL byte or is longer than [MaxValue] bytes.
func Refused(name, value string) bool {
	return !ValidName(name) || Denied(name) || len(value) > MaxValue || strings.IndexByte(value, 0) >= 0
}

// pamSets are names on the list that PAM modules exist to set: pam_env
// (PATH), pam_mail (MAIL), pam_systemd (XDG_RUNTIME_DIR), pam_tmpdir
// (TMPDIR).
var pamSets = []string{"PATH", "MAIL", "XDG_RUNTIME_DIR", "TMPDIR"}

// RefusedFromPAM reports whether the host's PAM stack (pam_getenvlist) may
// not set name to value in a session: the rule for clients, except for
// the few names PAM modules exist to set (PATH, MAIL, XDG_RUNTIME_DIR,
// TMPDIR). PAM can be configured to read the user's own files
// (pam_env's user_readenv), so what changes how programs load stays
// refused, and so do the names that say who the session is (USER, HOME,
// SHELL, SSH_*, ...).
func RefusedFromPAM(name, value string) bool {
	for _, n := range pamSets {
		if name == n {
			return len(value) > MaxValue || strings.IndexByte(value, 0) >= 0
		}
	}
	return Refused(name, value)
}

// Denied reports whether name is on the list, in any case.
func Denied(name string) bool {
	if DeniedPrefix(name) != "" {
		return true
	}
	for _, n := range deniedNames {
		if strings.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// DeniedPrefix returns the refused prefix s starts with (in any case), or
// "" if none.
func DeniedPrefix(s string) string {
	for _, p := range deniedPrefixes {
		if len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) {
			return p
		}
	}
	return ""
}

// ValidName reports whether name is a portable variable name,
// [A-Za-z_][A-Za-z0-9_]*, of at most [MaxName] bytes.
func ValidName(name string) bool {
	if name == "" || len(name) > MaxName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
