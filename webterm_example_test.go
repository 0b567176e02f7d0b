package sshmesh_test

import (
	"errors"
	"log"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

// The web terminal beside SSH: one Server, two mesh listeners. A visitor
// opens http://100.64.0.1:8022/ in a browser on the mesh (a WireGuard
// interface, or `sshmesh proxy`), sees who it is and the logins the
// policy offers, and gets a login shell decided, recorded and audited as
// an ssh session.
func ExampleServer_ServeWebTerminal() {
	cfg, _, err := netstack.LoadConfig("server.conf")
	if err != nil {
		log.Fatal(err)
	}
	node, err := netstack.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	doc, err := policy.Load("policy.hujson") // a *policy.Document lists the logins for the page
	if err != nil {
		log.Fatal(err)
	}
	key, err := sshmesh.LoadOrCreateHostKey("ssh_host_ed25519_key")
	if err != nil {
		log.Fatal(err)
	}
	srv := &sshmesh.Server{Policy: doc, HostKeys: []ssh.Signer{key}, RecordDir: "/var/log/sshmesh/casts"}

	web, err := node.Listen("tcp", ":8022")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		if err := srv.ServeWebTerminal(web); err != nil && !errors.Is(err, sshmesh.ErrServerClosed) {
			log.Print(err)
		}
	}()
	ln, err := node.Listen("tcp", ":22")
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.Serve(ln))
}
