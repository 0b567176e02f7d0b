package sshmesh_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/user"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh/agent"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestForwardAgentAsUser: the agent socket is made by the local user, so
// the programs that connect to it see the user's uid and gid
// (SO_PEERCRED), as with OpenSSH, and the socket is the user's.
func TestForwardAgentAsUser(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	ts := startServer(t, &sshmesh.Server{Policy: forwardPolicy(nil, nil, true),
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
			sock := s.AgentSocket()
			fi, err := os.Lstat(sock)
			if err != nil {
				got <- err.Error()
				return
			}
			st := fi.Sys().(*syscall.Stat_t)
			c, err := net.Dial("unix", sock)
			if err != nil {
				got <- err.Error()
				return
			}
			defer c.Close()
			uid, gid := peerCred(t, c)
			got <- fmt.Sprintf("socket %v uid=%d gid=%d; listener uid=%d gid=%d", fi.Mode(), st.Uid, st.Gid, uid, gid)
		})})
	runWithAgent(t, ts, keyring)
	u, g := nobody.Uid, nobody.Gid
	if got, want := <-got, fmt.Sprintf("socket Srw------- uid=%s gid=%s; listener uid=%s gid=%s", u, g, u, g); got != want {
		t.Errorf("agent socket: %s\nwant %s", got, want)
	}
}
