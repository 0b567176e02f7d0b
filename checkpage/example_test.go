package checkpage_test

import (
	"log"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/checkpage"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

// A server whose "check" rules ask for approval on a page at
// http://<mesh address>/check/<token> (which `sshmesh nc` serves on its own
// .localhost link), with passkeys and approvals kept in state files.
func Example() {
	var (
		node *netstack.Node   // this node, started with netstack.New
		doc  *policy.Document // the policy, from policy.Load
		srv  *sshmesh.Server  // with Policy: doc and HostKeys set
	)
	if node == nil {
		return // (the example only shows the wiring)
	}
	checker := &checkpage.Checker{
		Identify:    doc.Node,
		Timeout:     5 * time.Minute,
		StateFile:   "/var/lib/sshmesh/check-approvals.json",
		PasskeyFile: "/var/lib/sshmesh/passkeys.json",   // passkeys, the default proof
		InviteDir:   "/var/lib/sshmesh/passkey-invites", // checkpage.NewInvite codes enrol them
		Dial:        node.Dial,                          // notices let `sshmesh nc` serve the page locally
	}
	ln, err := node.Listen("tcp", ":80")
	if err != nil {
		log.Fatal(err)
	}
	go checker.Serve(ln)
	defer checker.Close()
	srv.Checker = checker
	// Output:
}
