package testkit

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/meshkey"
)

// WGQuick is a wg-quick file: its [Interface] section and one [Peer]
// section a peer. It takes plain values, not a netstack.Config, so that
// netstack's own tests can use it.
type WGQuick struct {
	PrivateKey meshkey.Private
	Addresses  []netip.Prefix // the Address line; none leaves it out (wg setconf refuses it)
	ListenPort uint16         // 0 leaves the line out
	Peers      []WGPeer
}

// WGPeer is one [Peer] section of a WGQuick.
type WGPeer struct {
	PublicKey  meshkey.Public
	AllowedIPs []netip.Prefix // none leaves the line out
	Endpoint   netip.AddrPort // the zero value leaves the line out
}

// String returns the file's text.
func (c WGQuick) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[Interface]\nPrivateKey = %s\n", c.PrivateKey.Base64())
	if len(c.Addresses) > 0 {
		fmt.Fprintf(&b, "Address = %s\n", join(c.Addresses))
	}
	if c.ListenPort != 0 {
		fmt.Fprintf(&b, "ListenPort = %d\n", c.ListenPort)
	}
	for _, p := range c.Peers {
		fmt.Fprintf(&b, "\n[Peer]\nPublicKey = %s\n", p.PublicKey)
		if len(p.AllowedIPs) > 0 {
			fmt.Fprintf(&b, "AllowedIPs = %s\n", join(p.AllowedIPs))
		}
		if p.Endpoint.IsValid() {
			fmt.Fprintf(&b, "Endpoint = %s\n", p.Endpoint)
		}
	}
	return b.String()
}

// Write writes the file at path, mode 0600, and returns path.
func (c WGQuick) Write(tb testing.TB, path string) string {
	tb.Helper()
	if err := os.WriteFile(path, []byte(c.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

func join(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
