package policy

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"strconv"
	"strings"
)

// checkForwardPattern validates a localForward or remoteForward pattern:
// HOST:PORT where HOST is an IP address, a CIDR prefix, a host name or *,
// and PORT is a number from 1 to 65535 or *. IPv6 addresses and prefixes
// go in brackets: [fd00::1]:22, [fd00::/8]:*.
func checkForwardPattern(p string) error {
	if strings.HasPrefix(p, "/") { // a unix socket path pattern (see SocketForwardAllowed)
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("%q: bad socket path pattern: %v", p, err)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(p)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT (e.g. localhost:8080, 10.0.0.0/8:*, [fd00::/8]:22, *:*)", p)
	}
	if port != "*" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return fmt.Errorf("%q: port %q is not a number from 1 to 65535 or *", p, port)
		}
	}
	switch {
	case host == "*":
	case strings.Contains(host, "/"):
		if _, err := netip.ParsePrefix(host); err != nil {
			return fmt.Errorf("%q: bad CIDR prefix %q", p, host)
		}
	case strings.Contains(host, ":"):
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%q: bad IPv6 address %q", p, host)
		}
	default:
		if _, err := netip.ParseAddr(host); err == nil {
			return nil
		}
		if !validHostName(host) {
			return fmt.Errorf("%q: host %q is not an IP address, CIDR prefix, host name or *", p, host)
		}
	}
	return nil
}

// validHostName reports whether h is a DNS-style host name.
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c == '-' || c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
				return false
			}
		}
	}
	return true
}

// ForwardAllowed reports whether a port forward to (ssh -L, -D) or from
// (ssh -R) host and port is allowed by patterns, as in
// [Decision.LocalForward] and [Decision.RemoteForward]. A pattern's host
// matches an IP address equal to it or inside its CIDR prefix, or a host
// name equal to it (ignoring case; names are not resolved, so a pattern
// naming an address does not match a name that resolves to it); * matches
// any host. The port must equal the pattern's, or the pattern's port is *.
// No patterns allow nothing.
func ForwardAllowed(patterns []string, host string, port int) bool {
	addr, addrErr := netip.ParseAddr(host)
	for _, p := range patterns {
		ph, pp, err := net.SplitHostPort(p)
		if err != nil {
			continue
		}
		if pp != "*" {
			if n, err := strconv.Atoi(pp); err != nil || n != port {
				continue
			}
		}
		switch {
		case ph == "*":
			return true
		case strings.Contains(ph, "/"):
			pfx, err := netip.ParsePrefix(ph)
			if err == nil && addrErr == nil && pfx.Contains(addr.Unmap()) {
				return true
			}
		default:
			if pa, err := netip.ParseAddr(ph); err == nil {
				if addrErr == nil && pa.Unmap() == addr.Unmap() {
					return true
				}
				continue
			}
			if addrErr != nil && strings.EqualFold(strings.TrimSuffix(ph, "."), strings.TrimSuffix(host, ".")) {
				return true
			}
		}
	}
	return false
}
