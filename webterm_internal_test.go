package sshmesh

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/meshkey"
)

// TestWebTokenBoundAndShortLived: a page token opens terminals for its
// visitor's key only, until it expires, and only under the Server that
// made it.
func TestWebTokenBoundAndShortLived(t *testing.T) {
	var s, other Server
	var a, b meshkey.Public
	a[0], b[0] = 1, 2
	now := time.Now()
	tok := s.webToken(a, now)
	for _, tc := range []struct {
		name string
		srv  *Server
		key  meshkey.Public
		at   time.Time
		want bool
	}{
		{"its visitor, now", &s, a, now, true},
		{"its visitor, just before expiry", &s, a, now.Add(WebTerminalTokenLifetime - time.Second), true},
		{"its visitor, at expiry", &s, a, now.Add(WebTerminalTokenLifetime), false},
		{"another visitor", &s, b, now, false},
		{"another server", &other, a, now, false},
	} {
		if got := tc.srv.webTokenValid(tok, tc.key, tc.at); got != tc.want {
			t.Errorf("%s: valid = %v, want %v", tc.name, got, tc.want)
		}
	}
	if s.webTokenValid(tok[:len(tok)-1]+"A", a, now) && tok[len(tok)-1] != 'A' {
		t.Error("a changed token is valid")
	}
}

func TestHostIsAddr(t *testing.T) {
	v4 := netip.MustParseAddrPort("100.64.0.1:8022")
	v4at80 := netip.MustParseAddrPort("100.64.0.1:80")
	v6 := netip.MustParseAddrPort("[fd7a::1]:8022")
	for _, tc := range []struct {
		host string
		a    netip.AddrPort
		want bool
	}{
		{"100.64.0.1:8022", v4, true},
		{"100.64.0.1", v4, false},
		{"100.64.0.1", v4at80, true},
		{"100.64.0.1:80", v4at80, true},
		{"100.64.0.2:8022", v4, false},
		{"evil.example:8022", v4, false},
		{"[fd7a::1]:8022", v6, true},
		{"[fd7a::1%eth0]:8022", v6, false},
		{"[::ffff:100.64.0.1]:8022", v4, true},
		{"", v4, false},
	} {
		if got := HostIsAddr(tc.host, tc.a); got != tc.want {
			t.Errorf("HostIsAddr(%q, %v) = %v, want %v", tc.host, tc.a, got, tc.want)
		}
	}
}
