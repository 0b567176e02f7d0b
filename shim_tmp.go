package sshmesh

import (
	"path"
	"strings"
)

// Temporary until policy.EnvAllowed and session/ land.
func envAllowed(patterns []string, name string) bool {
	if strings.HasPrefix(name, "LD_") || strings.HasPrefix(name, "DYLD_") || name == "BASH_ENV" || name == "ENV" || name == "PATH" {
		return false
	}
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// LoginHandler returns the default handler.
func LoginHandler() Handler {
	return HandlerFunc(func(s *Session) { s.Exit(1) })
}
