package policy

import (
	"fmt"
	"strings"

	"github.com/sshmesh/sshmesh/internal/envrule"
)

// EnvAllowed reports whether a client may set the environment variable name
// to value, given a rule's acceptEnv patterns (as in [Decision.AcceptEnv]).
// It is the one environment rule: the server applies it to every env
// request, and package session applies its refusals again to the
// environment it builds.
//
// A pattern is a name in which * matches any run of characters and ? any one
// character; patterns match names exactly as spelt (LANG allows LANG, not
// lang). Whatever the patterns say, these are refused:
//   - names that are not of the form [A-Za-z_][A-Za-z0-9_]* or are longer
//     than 256 bytes, and values longer than 32 KiB or holding a NUL byte;
//   - names that change how programs load or run: the loaders' (LD_*,
//     DYLD_*, GLIBC_TUNABLES, MALLOC_*, GCONV_*, GETCONF_DIR, ...), the
//     shells' (BASH_ENV, ENV, IFS, PS4, SHELLOPTS, EXECIGNORE, BASH_FUNC_*,
//     ...), language runtimes' (PYTHON*, PERL5*, RUBY*, NODE_OPTIONS, ...),
//     and those naming a program to run (EDITOR, PAGER, GIT_SSH_COMMAND,
//     GIT_CONFIG*, ...);
//   - names the session sets itself: PATH, HOME, SHELL, USER, LOGNAME,
//     MAIL, TERM (from the pty request), XDG_RUNTIME_DIR and SSH_*.
//
// Refused names are refused in any case (ld_preload, Path): the Linux loader
// reads only the exact names, but a handler may pass the variables on to a
// system whose names are case-insensitive (Windows), and no program needs a
// lowercase variant of a refused name. The full list, with the reason for
// each entry, is in internal/envrule/envrule.go.
func EnvAllowed(patterns []string, name, value string) bool {
	if envrule.Refused(name, value) {
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
		if pre := envrule.DeniedPrefix(lit); pre != "" {
			return fmt.Errorf("%q only names variables that change how programs load or run, or that the session sets (%s*); they are never accepted", p, pre)
		}
		return nil
	}
	if envrule.Denied(p) {
		return fmt.Errorf("%s changes how programs load or run, or the session sets it; it is never accepted", p)
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
