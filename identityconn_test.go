package sshmesh_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

// vouchedConn stands in for a tailnet conn (package tailnet): a coordinator
// vouches for both ends, and current turns false when it stops doing so.
type vouchedConn struct {
	net.Conn
	caller, self policy.Identity
	current      *atomic.Bool
}

func (c vouchedConn) PeerKey() meshkey.Public       { return c.caller.Key }
func (c vouchedConn) NodeKey() meshkey.Public       { return c.self.Key }
func (c vouchedConn) PeerCurrent() bool             { return c.current.Load() }
func (c vouchedConn) PeerIdentity() policy.Identity { return c.caller }
func (c vouchedConn) SelfIdentity() policy.Identity { return c.self }

// vouchedListener has no NodeKey method, as a tailnet's: the policy names
// the server by the coordinator's word, not by a key in "nodes".
type vouchedListener struct {
	net.Listener
	caller, self policy.Identity
	current      *atomic.Bool
}

func (l *vouchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return vouchedConn{Conn: c, caller: l.caller, self: l.self, current: l.current}, nil
}

var _ sshmesh.IdentityConn = vouchedConn{}

// TestIdentityConnVouchedIdentities: the coordinator's word on both ends
// reaches the policy (Request.Caller and Server), names the caller in the
// conn's status, and a caller no longer vouched for loses its session.
func TestIdentityConnVouchedIdentities(t *testing.T) {
	caller := policy.Identity{Key: meshkey.Public{1}, Node: "alice-laptop", Owner: "alice@example.com"}
	self := policy.Identity{Key: meshkey.Public{2}, Node: "build-1", Tags: []string{"tag:server"}}
	var mu sync.Mutex
	var got []policy.Request
	pol := policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
		if r.Caller == nil || r.Server == nil {
			return policy.Decision{}, errors.New("no vouched identities")
		}
		if r.Caller.Owner == "alice@example.com" && len(r.Server.Tags) == 1 && r.Server.Tags[0] == "tag:server" {
			return policy.Decision{Action: policy.Accept, LocalUser: r.User}, nil
		}
		return policy.Decision{}, nil
	})
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	current := &atomic.Bool{}
	current.Store(true)
	srv := &sshmesh.Server{Policy: pol, HostKeys: []ssh.Signer{signer}, Handler: blockingHandler}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(&vouchedListener{ln, caller, self, current}) }()
	defer func() {
		srv.Close()
		<-served
	}()

	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, ln.Addr().String(), &ssh.ClientConfig{User: "deploy", HostKeyCallback: ssh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	c := ssh.NewClient(sc, chans, reqs)
	defer c.Close()
	mu.Lock()
	r := got[len(got)-1]
	mu.Unlock()
	if r.Key != caller.Key || r.Self != self.Key || r.Caller == nil || r.Caller.Owner != caller.Owner || r.Server == nil || r.Server.Node != "build-1" {
		t.Fatalf("the policy was asked %+v; want the vouched caller and server", r)
	}

	sess := startBlockingOn(t, c) // its session runs: the server has the conn
	if st := srv.Conns(); len(st) != 1 || st[0].Identity.Owner != "alice@example.com" || st[0].Identity.Node != "alice-laptop" {
		t.Fatalf("conns %+v: want alice-laptop, owned by alice@example.com", st)
	}
	current.Store(false) // the coordinator no longer vouches for the caller
	if !sess.endedWithin(10 * time.Second) {
		t.Fatal("the session outlived its caller's standing")
	}
	if s := sess.stderr.String(); !strings.Contains(s, "coordinator no longer vouches") {
		t.Errorf("the session's stderr says %q; want why it ended", s)
	}
}

// wrappedConn is a conn over another, as a tls.Conn is: it tells what it
// wraps only through NetConn.
type wrappedConn struct{ net.Conn }

func (c wrappedConn) NetConn() net.Conn { return c.Conn }

// TestPeerCurrentThroughWrappers: Peer.Current follows the transport's
// word through any NetConn wrapper PeerOf looks through, so code serving
// a wrapped conn for long (the recorder's Recheck) sees a caller the
// coordinator stopped vouching for (found by review: the recorder asked
// the outer conn, which has no PeerCurrent, and never ended such streams).
func TestPeerCurrentThroughWrappers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	current := &atomic.Bool{}
	current.Store(true)
	c := wrappedConn{wrappedConn{vouchedConn{Conn: a, caller: policy.Identity{Key: meshkey.Public{1}, Node: "n"}, current: current}}}
	p, ok := sshmesh.PeerOf(c)
	if !ok || p.Key != (meshkey.Public{1}) {
		t.Fatalf("PeerOf(wrapped) = %v, %v; want the inner conn's peer", p.Key.Short(), ok)
	}
	if !p.Current() {
		t.Fatal("Current is false while the transport still vouches for the peer")
	}
	current.Store(false)
	if p.Current() {
		t.Fatal("Current is true after the transport stopped vouching for the peer")
	}
	if (sshmesh.Peer{}).Current() != true {
		t.Fatal("a Peer whose conn has no transport check is not current")
	}
}
