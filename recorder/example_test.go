package recorder_test

import (
	"log"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/recorder"
)

// A server whose rules name recorders streams those sessions to them; the
// rules that name none are recorded in a local directory.
func ExampleClient() {
	var (
		node    *netstack.Node   // this server's mesh node
		doc     *policy.Document // the policy, naming the recorder nodes
		hostKey ssh.Signer
	)
	srv := &sshmesh.Server{
		Policy:   doc,
		HostKeys: []ssh.Signer{hostKey},
		Recorder: &recorder.Client{
			Dial:    node.Dial,
			Resolve: recorder.MeshResolver(doc.NodesNamed, node.Peer, recorder.DefaultPort),
			Local:   sshmesh.DirRecorder{Dir: "/var/lib/sshmesh/recordings"},
		},
	}
	ln, err := node.Listen("tcp", ":22")
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.Serve(ln))
}

// A recorder node: it stores what the tag:server nodes send, and lets
// alice list and play recordings on its page.
func ExampleServer() {
	var (
		node *netstack.Node
		doc  *policy.Document
	)
	rec := &recorder.Server{
		Dir:      "/var/lib/sshmesh-recordings",
		Identify: doc.Node,
		Senders:  []string{"tag:server"},
		Viewers:  []string{"alice@example.com"},
		Addrs:    node.Addresses(),
	}
	streams, err := node.Listen("tcp", ":9422")
	if err != nil {
		log.Fatal(err)
	}
	page, err := node.Listen("tcp", ":80")
	if err != nil {
		log.Fatal(err)
	}
	go rec.ServePage(page)
	log.Fatal(rec.Serve(streams))
}
