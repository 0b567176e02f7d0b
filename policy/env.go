package policy

import (
	"fmt"
	"strings"
)

// Environment names that change how a program is loaded or which code it
// runs. A client may never set them, whatever a rule's acceptEnv says: with a
// forced command or an appliance shell they would be a way out. This is the
// one list; [EnvAllowed] and the document checks both use it.
var (
	// deniedEnvPrefixes refuse every name that starts with them.
	deniedEnvPrefixes = []string{
		"LD_",        // ld.so: LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ...
		"DYLD_",      // macOS dyld
		"MALLOC_",    // glibc malloc tunables, MALLOC_CHECK_, ...
		"GCONV_",     // glibc iconv modules
		"BASH_FUNC_", // exported bash functions
		"PYTHON",     // PYTHONPATH, PYTHONSTARTUP, PYTHONHOME, PYTHONUSERBASE, ...
		"PERL5",      // PERL5LIB, PERL5OPT, PERL5DB
		"RUBY",       // RUBYLIB, RUBYOPT
		"LUA_",       // LUA_PATH, LUA_CPATH, LUA_INIT
		"GIT_CONFIG", // GIT_CONFIG, GIT_CONFIG_PARAMETERS, GIT_CONFIG_COUNT, ...
	}
	// deniedEnvNames refuse exactly these names.
	deniedEnvNames = []string{
		// Shells: startup files, options, word splitting, tracing, path search.
		"BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "IFS", "CDPATH",
		"PROMPT_COMMAND", "BASH_XTRACEFD", "GLOBIGNORE", "ZDOTDIR",
		// The session sets these itself.
		"PATH", "HOME", "SHELL", "USER", "LOGNAME", "MAIL",
		// glibc: locale and conversion data, tunables, name resolution, debugging.
		"GCONV_PATH", "LOCPATH", "NLSPATH", "GLIBC_TUNABLES", "HOSTALIASES",
		"RESOLV_HOST_CONF", "RES_OPTIONS", "LOCALDOMAIN", "TZDIR",
		"SEGFAULT_OUTPUT_NAME", "SEGFAULT_SIGNALS", "SEGFAULT_USE_ALTSTACK",
		// Language runtimes that load code from a path or an option.
		"PERLLIB", "PERL5LIB", "PERL5OPT", "NODE_OPTIONS", "NODE_PATH",
		"JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
		"TCLLIBPATH", "PHPRC", "PHP_INI_SCAN_DIR",
		// Tools that run another program named in a variable.
		"GIT_EXEC_PATH", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS", "SSH_ASKPASS",
		"GIT_EXTERNAL_DIFF", "GIT_PAGER", "GIT_EDITOR", "GIT_PROXY_COMMAND",
		"GIT_TEMPLATE_DIR", "PAGER", "EDITOR", "VISUAL", "BROWSER",
		// Libraries that load modules or configuration named by a variable.
		"OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES", "KRB5_CONFIG",
		"SSL_CERT_FILE", "SSL_CERT_DIR", "GTK_MODULES", "GST_PLUGIN_PATH",
		"LOCALE_ARCHIVE", "XDG_CONFIG_DIRS", "XDG_DATA_DIRS", "TMPDIR",
	}
)

// envDenied reports whether name is on the loader list (ASCII case-insensitive).
func envDenied(name string) bool {
	for _, p := range deniedEnvPrefixes {
		if len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) {
			return true
		}
	}
	for _, n := range deniedEnvNames {
		if strings.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// validEnvName reports whether name is a portable variable name:
// [A-Za-z_][A-Za-z0-9_]*.
func validEnvName(name string) bool {
	if name == "" {
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

// EnvAllowed reports whether a client may set the environment variable
// name, given a rule's acceptEnv patterns (as in [Decision.AcceptEnv]).
// A pattern is a name in which * matches any run of characters and ? any one
// character. Names that are not of the form [A-Za-z_][A-Za-z0-9_]* and names
// that change how programs load or run (LD_*, DYLD_*, BASH_ENV, ENV, PATH,
// IFS, PYTHONPATH, ...) are refused whatever the patterns say.
func EnvAllowed(patterns []string, name string) bool {
	if !validEnvName(name) || envDenied(name) {
		return false
	}
	for _, p := range patterns {
		if globMatch(p, name) {
			return true
		}
	}
	return false
}

// checkEnvPattern validates an acceptEnv pattern. A pattern that can only
// name refused variables (LD_PRELOAD, LD_*, PATH) is an error, so the author
// learns it does nothing; broad patterns such as * are fine, and
// [EnvAllowed] still refuses the loader names they cover.
func checkEnvPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty pattern")
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c == '_' || c == '*' || c == '?' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return fmt.Errorf("bad character %q in pattern %q (want letters, digits, _, * and ?)", c, p)
		}
	}
	lit := p
	if i := strings.IndexAny(p, "*?"); i >= 0 {
		lit = p[:i]
		for _, pre := range deniedEnvPrefixes {
			if len(lit) >= len(pre) && strings.EqualFold(lit[:len(pre)], pre) {
				return fmt.Errorf("%q only names variables that change how programs load (%s*); they are never accepted", p, pre)
			}
		}
		return nil
	}
	if envDenied(p) {
		return fmt.Errorf("%s changes how programs load or run and is never accepted", p)
	}
	return nil
}

// globMatch reports whether name matches pattern, where * matches any run of
// characters and ? one character. It does not allocate.
func globMatch(pattern, name string) bool {
	px, nx := 0, 0
	nextPx, nextNx := 0, 0
	for px < len(pattern) || nx < len(name) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				nextPx, nextNx = px, nx+1
				px++
				continue
			case '?':
				if nx < len(name) {
					px++
					nx++
					continue
				}
			default:
				if nx < len(name) && name[nx] == c {
					px++
					nx++
					continue
				}
			}
		}
		if 0 < nextNx && nextNx <= len(name) {
			px, nx = nextPx, nextNx
			continue
		}
		return false
	}
	return true
}
