package sshmesh_test

import (
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/session"
)

// TestServeRefusesHostRulesItCannotApply: Serve returns an error at once,
// rather than refusing every login, when HostRules asks for PAM and the
// helper is not there (or the service name is not a name).
func TestServeRefusesHostRulesItCannotApply(t *testing.T) {
	for name, rules := range map[string]session.HostRules{
		"no helper":    {PAMService: "sshmesh", PAMHelper: t.TempDir() + "/no-such-helper"},
		"service path": {PAMService: "../shadow", PAMHelper: "/bin/true"},
	} {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			srv := &sshmesh.Server{Policy: allowPolicy(), HostKeys: []ssh.Signer{hostKey(t)}, HostRules: rules}
			err = srv.Serve(sshmesh.NewListener(ln, addrTable{}, nil))
			if err == nil || !strings.Contains(err.Error(), "Server.HostRules") {
				t.Errorf("Serve = %v, want an error naming Server.HostRules", err)
			}
		})
	}
}
