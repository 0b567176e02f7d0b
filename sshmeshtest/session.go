package sshmeshtest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
)

// SessionOptions describe the session [RunHandler] runs: what the client
// asks for, and who it is. The zero value is a shell session of login
// "test", with no terminal and empty stdin, from a caller the policy
// knows as node "laptop" of owner "test@example.com".
type SessionOptions struct {
	User      string            // login name, which is also the local user; "" means "test"
	Command   string            // exec this command; "" (and no Subsystem) means a shell
	Subsystem string            // ask for this subsystem instead
	Env       map[string]string // sent with env requests; the rule accepts them all
	Pty       *sshmesh.Pty      // ask for a terminal (its Term and Window)
	Stdin     string            // what the client sends, then EOF
	Caller    policy.Identity   // the caller as the policy names it; Key is filled in
	Decision  policy.Decision   // options of the accepting rule (Action, LocalUser and Caller are set)
}

// Recorder is what a handler did in a session run by [RunHandler], as the
// client saw it.
type Recorder struct {
	Stdout, Stderr string
	ExitStatus     int    // the exit status; -1 when the session ended without one
	ExitSignal     string // the signal it ended with (Session.ExitSignal), or ""
}

// RunHandler runs h for one session and returns what the client got: like
// net/http/httptest's recorder, it tests a [sshmesh.Handler] without a mesh.
// The session is real (a [sshmesh.Server] over loopback TCP, an
// x/crypto/ssh client, the Session h gets is the one a mesh conn would
// get); only the mesh is left out: the conn's peer is a fixed key. It fails
// tb when the session cannot be set up, or does not end within a minute.
func RunHandler(tb testing.TB, h sshmesh.Handler, o SessionOptions) *Recorder {
	tb.Helper()
	if o.User == "" {
		o.User = "test"
	}
	key, err := meshkey.NewPrivate()
	if err != nil {
		tb.Fatal(err)
	}
	caller := o.Caller
	caller.Key = key.Public()
	if caller.Node == "" && caller.Owner == "" && len(caller.Tags) == 0 {
		caller.Node, caller.Owner = "laptop", "test@example.com"
	}
	d := o.Decision
	d.Action, d.LocalUser, d.Caller = policy.Accept, o.User, caller
	if d.AcceptEnv == nil {
		d.AcceptEnv = []string{"*"}
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	srv := &sshmesh.Server{
		Policy:   policy.Func(func(_ context.Context, _ policy.Request) (policy.Decision, error) { return d, nil }),
		HostKeys: []ssh.Signer{hostKey},
		Handler:  h,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	loopback := netip.MustParseAddr("127.0.0.1")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(sshmesh.NewListener(ln, fixedPeer{loopback, key.Public()}, nil)) }()
	defer func() {
		srv.Close()
		if err := <-errc; !errors.Is(err, sshmesh.ErrServerClosed) {
			tb.Errorf("Serve: %v", err)
		}
	}()

	nc, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(time.Minute))
	c, chans, reqs, err := ssh.NewClientConn(nc, ln.Addr().String(), &ssh.ClientConfig{
		User: o.User, HostKeyCallback: ssh.FixedHostKey(hostKey.PublicKey()),
	})
	if err != nil {
		nc.Close()
		tb.Fatalf("sshmeshtest: log in: %v", err)
	}
	cl := ssh.NewClient(c, chans, reqs)
	defer cl.Close()
	if o.Subsystem != "" {
		rec := &Recorder{}
		if err := runSubsystem(cl, o.Subsystem, o, rec); err != nil {
			tb.Fatalf("sshmeshtest: %v", err)
		}
		return rec
	}
	s, err := cl.NewSession()
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range o.Env {
		if err := s.Setenv(k, v); err != nil {
			tb.Fatalf("sshmeshtest: env %s: %v", k, err)
		}
	}
	if p := o.Pty; p != nil {
		if err := s.RequestPty(p.Term, int(p.Window.Rows), int(p.Window.Cols), nil); err != nil {
			tb.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	s.Stdin, s.Stdout, s.Stderr = strings.NewReader(o.Stdin), &stdout, &stderr
	switch {
	case o.Command != "":
		err = s.Run(o.Command)
	default:
		if err = s.Shell(); err == nil {
			err = s.Wait()
		}
	}
	rec := &Recorder{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		rec.ExitStatus, rec.ExitSignal = ee.ExitStatus(), ee.Signal()
	case errors.As(err, &missing):
		rec.ExitStatus = -1
	default:
		tb.Fatalf("sshmeshtest: session: %v", err)
	}
	return rec
}

// runSubsystem runs the subsystem name on a session channel of its own
// (x/crypto's Session cannot wait for a subsystem), with o's env and
// stdin, and records what the client got in rec.
func runSubsystem(cl *ssh.Client, name string, o SessionOptions, rec *Recorder) error {
	ch, reqs, err := cl.OpenChannel("session", nil)
	if err != nil {
		return err
	}
	defer ch.Close()
	rec.ExitStatus = -1
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for req := range reqs {
			switch req.Type {
			case "exit-status":
				var m struct{ Status uint32 }
				if ssh.Unmarshal(req.Payload, &m) == nil {
					rec.ExitStatus = int(m.Status)
				}
			case "exit-signal":
				var m struct {
					Signal     string
					CoreDumped bool
					Msg, Lang  string
				}
				if ssh.Unmarshal(req.Payload, &m) == nil {
					rec.ExitSignal = m.Signal
				}
			}
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}()
	for k, v := range o.Env {
		ch.SendRequest("env", true, ssh.Marshal(struct{ Name, Value string }{k, v}))
	}
	if ok, err := ch.SendRequest("subsystem", true, ssh.Marshal(struct{ Name string }{name})); err != nil || !ok {
		return fmt.Errorf("subsystem %q refused: %v", name, err)
	}
	go func() {
		io.WriteString(ch, o.Stdin)
		ch.CloseWrite()
	}()
	var stdout, stderr bytes.Buffer
	done := make(chan struct{})
	go func() {
		io.Copy(&stderr, ch.Stderr())
		close(done)
	}()
	io.Copy(&stdout, ch)
	<-done
	ch.Close()
	<-exited
	rec.Stdout, rec.Stderr = stdout.String(), stderr.String()
	return nil
}

// fixedPeer says that addr belongs to key, as a mesh would.
type fixedPeer struct {
	addr netip.Addr
	key  meshkey.Public
}

func (f fixedPeer) PeerForAddr(a netip.Addr) (meshkey.Public, bool) {
	return f.key, a == f.addr
}
