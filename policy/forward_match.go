package policy

import (
	"path"
	"strings"
)

// SocketForwardAllowed reports whether forwarding to (ssh -L) or from
// (ssh -R) the Unix socket at socketPath is allowed by patterns, as in
// [Decision.LocalForward] and [Decision.RemoteForward]: a pattern that is
// an absolute path matches socketPath with [path.Match] rules (* does not
// cross a /), after both are cleaned. HOST:PORT patterns, *:* included,
// never match a socket; a relative socketPath matches nothing.
func SocketForwardAllowed(patterns []string, socketPath string) bool {
	if !strings.HasPrefix(socketPath, "/") {
		return false
	}
	socketPath = path.Clean(socketPath)
	for _, p := range patterns {
		if !strings.HasPrefix(p, "/") {
			continue
		}
		if ok, err := path.Match(path.Clean(p), socketPath); err == nil && ok {
			return true
		}
	}
	return false
}
