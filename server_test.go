package sshmesh_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/internal/envtest"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// These tests drive the Server over loopback TCP with a fixed address →
// key table: the Server serves any listener whose conns carry a peer, and
// this isolates its SSH logic. mesh_test.go runs the same Server over two
// in-process WireGuard nodes.

// addrTable resolves source addresses to peers from a fixed map.
type addrTable map[netip.Addr]meshkey.Public

func (t addrTable) PeerForAddr(a netip.Addr) (meshkey.Public, bool) {
	k, ok := t[a]
	return k, ok
}

func newKey(t testing.TB) meshkey.Public {
	t.Helper()
	k, err := meshkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

var (
	clientAddr  = netip.MustParseAddr("127.0.0.1")
	client2Addr = netip.MustParseAddr("127.0.0.2")
)

// allowPolicy accepts every login name except "nobody", as that same local
// user, and names the caller.
func allowPolicy(acceptEnv ...string) policy.Policy {
	return policy.Func(func(ctx context.Context, r policy.Request) (policy.Decision, error) {
		if r.User == "nobody" {
			return policy.Decision{Action: policy.Reject, Rule: "ssh[0]", Message: "nobody may not log in here"}, nil
		}
		return policy.Decision{Action: policy.Accept, LocalUser: r.User, Rule: "ssh[1]", AcceptEnv: acceptEnv,
			Caller: policy.Identity{Key: r.Key, Node: "laptop", Owner: "ann@example.com"}}, nil
	})
}

type testServer struct {
	srv  *sshmesh.Server
	addr string
	keys addrTable
	ln   *sshmesh.Listener
	errc chan error
}

func hostKey(t testing.TB) ssh.Signer {
	t.Helper()
	k, err := sshmesh.LoadOrCreateHostKey(t.TempDir() + "/hostkey")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// startServer serves srv on a loopback port; 127.0.0.1 and 127.0.0.2 are
// two known peers, every other address is unknown.
func startServer(t testing.TB, srv *sshmesh.Server) *testServer {
	t.Helper()
	if srv.HostKeys == nil {
		srv.HostKeys = []ssh.Signer{hostKey(t)}
	}
	if srv.Policy == nil {
		srv.Policy = allowPolicy()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, addr: ln.Addr().String(), keys: addrTable{clientAddr: newKey(t), client2Addr: newKey(t)}, errc: make(chan error, 1)}
	ts.ln = sshmesh.NewListener(ln, ts.keys, nil)
	go func() { ts.errc <- srv.Serve(ts.ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-ts.errc; !errors.Is(err, sshmesh.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ts
}

// dialFrom opens an SSH client conn from the loopback address src.
func (ts *testServer) dialFrom(t testing.TB, src netip.Addr, user string, banner *string) (*ssh.Client, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ClientConfig{
		User:            user,
		HostKeyCallback: ssh.FixedHostKey(ts.srv.HostKeys[0].PublicKey()),
		Timeout:         5 * time.Second,
		BannerCallback: func(msg string) error {
			if banner != nil {
				*banner += msg
			}
			return nil
		},
	}
	c, chans, reqs, err := ssh.NewClientConn(nc, ts.addr, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	cl := ssh.NewClient(c, chans, reqs)
	t.Cleanup(func() { cl.Close() })
	return cl, nil
}

func (ts *testServer) dial(t testing.TB, user string) *ssh.Client {
	t.Helper()
	c, err := ts.dialFrom(t, clientAddr, user, nil)
	if err != nil {
		t.Fatalf("dial as %s: %v", user, err)
	}
	return c
}

func exitCode(err error) int {
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestLoginAcceptedIdentityAndExitCode(t *testing.T) {
	type seen struct {
		Key, Node, Owner, User, LocalUser, Raw, Rule string
		Cmd                                          []string
		Addr                                         string
	}
	got := make(chan seen, 1)
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		id := s.Identity()
		got <- seen{id.Key.String(), id.Node, id.Owner, id.User, s.LocalUser(), s.RawCommand(), s.Decision().Rule, s.Command(), id.Addr.Addr().String()}
		fmt.Fprintln(s, "hello", s.LocalUser())
		s.Exit(7)
	})})
	c := ts.dial(t, "deploy")
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Output(`echo "a b" 'c'`)
	if code := exitCode(err); code != 7 {
		t.Fatalf("exit code %d (%v), want 7", code, err)
	}
	if string(out) != "hello deploy\n" {
		t.Errorf("stdout %q", out)
	}
	want := seen{ts.keys[clientAddr].String(), "laptop", "ann@example.com", "deploy", "deploy", `echo "a b" 'c'`, "ssh[1]", []string{"echo", "a b", "c"}, clientAddr.String()}
	if diff := cmp.Diff(want, <-got); diff != "" {
		t.Errorf("handler saw (-want +got):\n%s", diff)
	}
}

func TestLoginRefusedWithBanner(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		t.Error("handler ran for a refused login")
	})})
	var banner string
	_, err := ts.dialFrom(t, clientAddr, "nobody", &banner)
	if err == nil {
		t.Fatal("refused login got in")
	}
	if want := "sshmesh: nobody may not log in here\r\n"; banner != want {
		t.Errorf("banner %q, want %q", banner, want)
	}
}

func TestPolicyErrorRefusesPlainly(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{Policy: policy.Func(func(context.Context, policy.Request) (policy.Decision, error) {
		return policy.Decision{}, errors.New("control plane unreachable at 10.9.9.9")
	})})
	var banner string
	if _, err := ts.dialFrom(t, clientAddr, "ann", &banner); err == nil {
		t.Fatal("login got in although the policy failed")
	}
	if banner != "sshmesh: access denied\r\n" {
		t.Errorf("banner %q: internals must not reach the client", banner)
	}
}

func TestUnknownPeerRefusedBeforeHandshake(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{})
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9)}}
	nc, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(20 * time.Second)) // the server closes it at once
	n, err := nc.Read(make([]byte, 64))
	if n != 0 || err == nil {
		t.Fatalf("unknown peer read %d bytes (err %v): the server spoke to it", n, err)
	}
	if ts.ln.Unknown() != 1 {
		t.Errorf("Unknown() = %d, want 1", ts.ln.Unknown())
	}
}

// TestFrameOrder checks that exit-status reaches the client before EOF and
// CLOSE, and stderr stays apart from stdout.
func TestFrameOrder(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		io.WriteString(s, "out")
		io.WriteString(s.Stderr(), "err")
		s.Exit(3)
	})})
	c := ts.dial(t, "ann")
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ S string }{"x"})); !ok || err != nil {
		t.Fatalf("exec: %v %v", ok, err)
	}
	stderr := make(chan []byte)
	go func() { b, _ := io.ReadAll(ch.Stderr()); stderr <- b }()
	stdout, err := io.ReadAll(ch) // returns at EOF
	if err != nil {
		t.Fatal(err)
	}
	// Requests and EOF arrive in order on one mux goroutine: once EOF is
	// seen, an exit-status sent before it is already queued.
	select {
	case r := <-reqs:
		var st struct{ Status uint32 }
		if r.Type != "exit-status" || ssh.Unmarshal(r.Payload, &st) != nil || st.Status != 3 {
			t.Errorf("first request %q %x, want exit-status 3", r.Type, r.Payload)
		}
	default:
		t.Fatal("EOF arrived before exit-status")
	}
	if string(stdout) != "out" || string(<-stderr) != "err" {
		t.Errorf("stdout %q, want out; stderr apart", stdout)
	}
}

func TestEnvFilteredByRule(t *testing.T) {
	got := make(chan []string, 1)
	ts := startServer(t, &sshmesh.Server{
		Policy: allowPolicy("LANG", "LC_*", "LD_*"),
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
			got <- s.Environ()
		}),
	})
	sess, err := ts.dial(t, "ann").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"LANG", "C.UTF-8"}, {"LC_ALL", "C"}, {"LD_PRELOAD", "/x.so"}, {"EDITOR", "vi"}, {"LC_BAD", "a\x00b"}} {
		sess.Setenv(kv[0], kv[1]) // refused ones return an error; the result is what the handler sees
	}
	if err := sess.Run("env"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"LANG=C.UTF-8", "LC_ALL=C"}, <-got); diff != "" {
		t.Errorf("Environ (-want +got):\n%s", diff)
	}
}

// TestEnvRule runs the environment rule's one table (policy and package
// session run it too) through the server: under a rule that accepts "*",
// each env request is answered yes exactly when the rule accepts it, and the
// handler sees exactly the accepted variables, in order.
func TestEnvRule(t *testing.T) {
	got := make(chan []string, 1)
	ts := startServer(t, &sshmesh.Server{
		Policy:  allowPolicy("*"),
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { got <- s.Environ() }),
	})
	sess, err := ts.dial(t, "ann").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, c := range envtest.Cases() {
		err := sess.Setenv(c.Name, c.Value)
		if (err == nil) != c.Accepted {
			t.Errorf("env %.40q=%.40q: reply %v, want accepted %v", c.Name, c.Value, err, c.Accepted)
		}
		if c.Accepted {
			want = append(want, c.Name+"="+c.Value)
		}
	}
	if err := sess.Run("env"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, <-got); diff != "" {
		t.Errorf("Environ (-want +got):\n%s", diff)
	}
}

func TestPtyWindowChangeAndSignals(t *testing.T) {
	type report struct {
		Pty     sshmesh.Pty
		HasPty  bool
		Window  sshmesh.Window
		Signal  sshmesh.Signal
		Command string
	}
	got := make(chan report, 1)
	ready := make(chan struct{})
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		p, ok := s.Pty()
		close(ready)
		r := report{Pty: p, HasPty: ok, Command: s.RawCommand()}
		r.Window = <-s.WindowChanges()
		r.Signal = <-s.Signals()
		got <- r
	})})
	sess, err := ts.dial(t, "ann").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	modes := ssh.TerminalModes{ssh.ECHO: 0, ssh.VINTR: 3}
	if err := sess.RequestPty("xterm-256color", 40, 100, modes); err != nil {
		t.Fatal(err)
	}
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	<-ready
	if err := sess.WindowChange(50, 132); err != nil {
		t.Fatal(err)
	}
	if err := sess.Signal(ssh.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if !r.HasPty || r.Pty.Term != "xterm-256color" || r.Pty.Window.Cols != 100 || r.Pty.Window.Rows != 40 || len(r.Pty.Modes) == 0 {
		t.Errorf("pty %+v", r.Pty)
	}
	if r.Window.Cols != 132 || r.Window.Rows != 50 || r.Signal != "USR1" || r.Command != "" {
		t.Errorf("window %+v signal %q command %q", r.Window, r.Signal, r.Command)
	}
}

func TestExitSignal(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		s.ExitSignal("TERM", true, "terminated")
	})})
	sess, err := ts.dial(t, "ann").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	err = sess.Run("x")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.Signal() != "TERM" || ee.Msg() != "terminated" {
		t.Fatalf("Run: %v, want exit-signal TERM", err)
	}
}

func TestHandlerPanicEndsOnlyThatSession(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		if s.RawCommand() == "panic" {
			panic("boom")
		}
	})})
	c := ts.dial(t, "ann")
	sess, _ := c.NewSession()
	if code := exitCode(sess.Run("panic")); code != 255 {
		t.Errorf("panicking handler: exit %d, want 255", code)
	}
	sess, _ = c.NewSession()
	if err := sess.Run("ok"); err != nil {
		t.Errorf("next session on the same conn: %v", err)
	}
}

func TestUnsupportedRequestsAnswered(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{})
	c := ts.dial(t, "ann")
	ok, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
	if err != nil || ok {
		t.Errorf("keepalive: ok=%v err=%v, want a failure reply", ok, err)
	}
	_, _, err = c.OpenChannel("x11", nil)
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.UnknownChannelType {
		t.Errorf("x11 channel: %v, want UnknownChannelType", err)
	}
	sess, _ := c.NewSession()
	if ok, _ := sess.SendRequest("x11-req", true, nil); ok {
		t.Error("x11-req accepted")
	}
}

func TestMaxSessions(t *testing.T) {
	release := make(chan struct{})
	ts := startServer(t, &sshmesh.Server{MaxSessions: 3, Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { <-release })})
	c := ts.dial(t, "ann")
	defer close(release)
	for i := 0; i < 3; i++ {
		if _, err := c.NewSession(); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	_, err := c.NewSession()
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.ResourceShortage {
		t.Fatalf("4th session: %v, want ResourceShortage", err)
	}
}

// TestRegisterOnShutdown: a session that would run forever ends when told
// that Shutdown began.
func TestRegisterOnShutdown(t *testing.T) {
	stop := make(chan struct{})
	srv := &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		io.WriteString(s, "ready\n")
		<-stop
		io.WriteString(s, "server going down\n")
	})}
	srv.RegisterOnShutdown(func() { close(stop) })
	ts := startServer(t, srv)
	o := startBlocking(t, ts, "ann")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if !o.endedWithin(endWait) {
		t.Error("session still open after Shutdown")
	}
}

func TestShutdownWaitsForSessions(t *testing.T) {
	release := make(chan struct{})
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		<-release
		io.WriteString(s, "bye")
	})})
	c := ts.dial(t, "ann")
	sess, _ := c.NewSession()
	var out bytes.Buffer
	sess.Stdout = &out
	if err := sess.Start("x"); err != nil {
		t.Fatal(err)
	}
	idle := ts.dial(t, "ann") // a conn with no session is closed by Shutdown

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a busy session: %v, want DeadlineExceeded", err)
	}
	if err := idle.Wait(); err == nil {
		t.Error("idle conn still open")
	}
	_ = sess.Wait()
	close(release)

	// A second server: the session ends in time, Shutdown returns nil.
	release2 := make(chan struct{})
	ts2 := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		<-release2
		io.WriteString(s, "bye")
	})})
	sess2, _ := ts2.dial(t, "ann").NewSession()
	var out2 bytes.Buffer
	sess2.Stdout = &out2
	sess2.Start("x")
	time.AfterFunc(100*time.Millisecond, func() { close(release2) })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := ts2.srv.Shutdown(ctx2); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := sess2.Wait(); err != nil || out2.String() != "bye" {
		t.Errorf("session during Shutdown: %v, output %q", err, out2.String())
	}
}

// TestStalledConnsDoNotBlockLogin: 200 conns from one peer that never send a
// byte do not stop a login from another peer — it completes while they are
// still open — and the server cuts them at LoginGraceTime.
//
// The grace is long enough that a login on a loaded machine (CI runs the
// packages' tests side by side under the race detector on 2 cores) ends
// well within it; a login the stalled conns held up would take all of it.
func TestStalledConnsDoNotBlockLogin(t *testing.T) {
	const grace = 10 * time.Second
	ts := startServer(t, &sshmesh.Server{LoginGraceTime: grace, Handler: sshmesh.HandlerFunc(func(*sshmesh.Session) {})})
	var stalled []net.Conn
	for i := 0; i < 200; i++ {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, nc)
	}
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	opened := time.Now()
	c, err := ts.dialFrom(t, client2Addr, "ann", nil)
	if err != nil {
		t.Fatalf("legitimate login while 200 conns stall: %v", err)
	}
	sess, _ := c.NewSession()
	if err := sess.Run("x"); err != nil {
		t.Fatal(err)
	}
	if time.Since(opened) >= grace {
		t.Fatalf("the login took until the stalled conns timed out (%v)", time.Since(opened))
	}
	// Every stalled conn is closed by the server by the deadline (plus slack).
	deadline := opened.Add(grace + 5*time.Second)
	for i, nc := range stalled {
		nc.SetReadDeadline(deadline)
		if _, err := io.Copy(io.Discard, nc); err != nil {
			t.Fatalf("stalled conn %d not closed by the server: %v", i, err)
		}
	}
	if d := time.Since(opened); d < grace-100*time.Millisecond {
		t.Errorf("stalled conns were cut after %v, before LoginGraceTime %v", d, grace)
	}
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("reading /proc/self/fd: %v (sshmesh runs on Linux)", err)
	}
	return len(ents)
}

// TestNoLeakAfterManySessions runs 1,000 sequential sessions and checks
// that goroutines and fds come back to where they were.
func TestNoLeakAfterManySessions(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { io.WriteString(s, "x") })})
	run := func(n int) {
		for i := 0; i < n; {
			c := ts.dial(t, "ann")
			for j := 0; j < 10; j++ {
				sess, err := c.NewSession()
				if err != nil {
					t.Fatal(err)
				}
				if out, err := sess.Output("x"); err != nil || string(out) != "x" {
					t.Fatalf("session %d: %q %v", i, out, err)
				}
				i++
			}
			c.Close()
		}
	}
	run(20) // warm up pools and lazily started goroutines
	g0, f0 := settle(t, 0, 0)
	run(1000)
	g1, f1 := settle(t, g0, f0)
	if g1 > g0+5 || f1 > f0+5 {
		t.Errorf("after 1,000 sessions: goroutines %d → %d, fds %d → %d", g0, g1, f0, f1)
	}
}

// settle waits up to 10 s for conns that were just closed to be torn down,
// that is for goroutines and fds to come down to g0+5 and f0+5 (or to stop
// falling when g0 is 0), and returns the counts.
func settle(t *testing.T, g0, f0 int) (int, int) {
	g, f := runtime.NumGoroutine(), countFDs(t)
	for i := 0; i < 100; i++ {
		time.Sleep(100 * time.Millisecond)
		g2, f2 := runtime.NumGoroutine(), countFDs(t)
		if g0 > 0 && g2 <= g0+5 && f2 <= f0+5 {
			return g2, f2
		}
		if g0 == 0 && i >= 5 && g2 == g && f2 == f {
			return g2, f2
		}
		g, f = g2, f2
	}
	return g, f
}

func TestKnownHostsLine(t *testing.T) {
	k := hostKey(t)
	line := sshmesh.KnownHostsLine(k.PublicKey(), 22, netip.MustParseAddr("100.64.0.1"))
	if want := "100.64.0.1 " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.PublicKey()))); line != want {
		t.Errorf("got %q, want %q", line, want)
	}
	line = sshmesh.KnownHostsLine(k.PublicKey(), 2222, netip.MustParseAddr("fd7a::1"))
	if !strings.HasPrefix(line, "[fd7a::1]:2222 ssh-ed25519 ") {
		t.Errorf("got %q", line)
	}
}

func TestHostKeyPersisted(t *testing.T) {
	path := t.TempDir() + "/hostkey"
	k1, err := sshmesh.LoadOrCreateHostKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", st.Mode(), err)
	}
	k2, err := sshmesh.LoadOrCreateHostKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1.PublicKey().Marshal(), k2.PublicKey().Marshal()) || k1.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Error("second load gave another key")
	}
	os.WriteFile(path, []byte("not a key"), 0o600)
	if _, err := sshmesh.LoadOrCreateHostKey(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("bad key file: %v, want an error naming the file", err)
	}
}

var _ sync.Mutex

// TestKeepAliveClosesDeadClient: a client that never answers keepalives is
// dropped KeepAliveCountMax intervals after the probe it left unanswered;
// one that answers stays.
//
// The time is counted from the probe's arrival (the server probes at the
// first or second tick, depending on when the client last spoke), and the
// interval is long enough that a loaded machine's delays (CI runs the
// packages' tests side by side under the race detector on 2 cores) stay
// within the half interval of slack, while a server that waited one
// unanswered interval more than KeepAliveCountMax is still caught.
func TestKeepAliveClosesDeadClient(t *testing.T) {
	const interval = time.Second
	ts := startServer(t, &sshmesh.Server{KeepAliveInterval: interval, KeepAliveCountMax: 2})
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c, _, reqs, err := ssh.NewClientConn(nc, ts.addr, &ssh.ClientConfig{User: "ann", HostKeyCallback: ssh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatal(err)
	}
	// The global requests are read but never answered.
	probed := make(chan time.Time, 1)
	go func() {
		for r := range reqs {
			if r.Type == "keepalive@openssh.com" {
				select {
				case probed <- time.Now():
				default:
				}
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	var at time.Time
	select {
	case at = <-probed:
	case <-done:
		t.Fatal("the conn closed before any keepalive")
	case <-time.After(10 * interval):
		t.Fatal("no keepalive after 10 intervals")
	}
	select {
	case <-done:
		if d := time.Since(at); d > 2*interval+interval/2 {
			t.Errorf("dead client dropped %v after the keepalive it left unanswered, want about %v (KeepAliveCountMax intervals)", d, 2*interval)
		}
	case <-time.After(10 * interval):
		t.Fatal("a client that never answers keepalives is still connected 10 intervals after the first")
	}

	alive := ts.dial(t, "ann") // ssh.NewClient answers keepalives
	time.Sleep(3*interval + interval/2)
	if _, err := alive.NewSession(); err != nil {
		t.Errorf("a client that answers keepalives was dropped: %v", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{IdleTimeout: 300 * time.Millisecond, KeepAliveInterval: -1,
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { <-s.Context().Done() })})
	c := ts.dial(t, "ann")
	sess, _ := c.NewSession()
	sess.Start("x")
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("idle conn not closed")
	}
}

// TestKeepAliveBusyClientStays: a client whose keepalive replies are held
// up (here: never sent) but which keeps sending data is alive, as sshd
// judges it: anything heard from the client counts.
//
// The interval is long enough that a loaded machine's pauses in the
// client's writes stay well under the three intervals of silence that drop
// a conn; a server that counted only keepalive replies drops the client
// after three or four intervals, within the test's eight.
func TestKeepAliveBusyClientStays(t *testing.T) {
	const interval = 500 * time.Millisecond
	ts := startServer(t, &sshmesh.Server{KeepAliveInterval: interval, KeepAliveCountMax: 2,
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { io.Copy(io.Discard, s) })})
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c, _, _, err := ssh.NewClientConn(nc, ts.addr, &ssh.ClientConfig{User: "ann", HostKeyCallback: ssh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Nobody reads the global requests: no keepalive is ever answered.
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	if ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ S string }{"upload"})); !ok || err != nil {
		t.Fatalf("exec: %v %v", ok, err)
	}
	buf := make([]byte, 1024)
	for end := time.Now().Add(8 * interval); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if _, err := ch.Write(buf); err != nil {
			t.Fatalf("a client that keeps sending was dropped: %v", err)
		}
	}
}

// TestSessionChannelsClosedAtEnd: a handler that ranges over WindowChanges,
// Signals and Breaks ends when the session ends: the channels are closed.
func TestSessionChannelsClosedAtEnd(t *testing.T) {
	ranged := make(chan string, 3)
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		go func() {
			for range s.Signals() {
			}
			ranged <- "signals"
		}()
		go func() {
			for range s.Breaks() {
			}
			ranged <- "breaks"
		}()
		io.WriteString(s, "ready")
		for range s.WindowChanges() {
		}
		ranged <- "windows"
	})})
	c := ts.dial(t, "ann")
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := sess.StdoutPipe()
	if err := sess.Start("x"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatal(err)
	}
	sess.WindowChange(40, 100)
	sess.Close()
	got := map[string]bool{}
	for range 3 {
		select {
		case r := <-ranged:
			got[r] = true
		case <-time.After(20 * time.Second):
			t.Fatalf("after the session ended, still ranging: done %v", got)
		}
	}
}

// TestShutdownCancelsSessionContext: Shutdown's start makes every
// session's Context done, so a handler that waits on it finishes and
// Shutdown returns without waiting for its own deadline.
func TestShutdownCancelsSessionContext(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
		io.WriteString(s, "ready")
		<-s.Context().Done()
		io.WriteString(s, " bye")
	})})
	c := ts.dial(t, "ann")
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var out sshmeshtest.Buffer
	sess.Stdout = &out
	if err := sess.Start("x"); err != nil {
		t.Fatal(err)
	}
	out.WaitFor(t, "ready")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v; want nil (the handler waits on its Context)", err)
	}
	sess.Wait()
	if got := out.String(); got != "ready bye" {
		t.Errorf("client got %q, want %q", got, "ready bye")
	}
}

// TestRefusedLoginLogged: the "conn closed" event of a refused login names
// the refusal (the rule and the login), not the SSH library's handshake
// error.
func TestRefusedLoginLogged(t *testing.T) {
	var log sshmeshtest.Buffer
	ts := startServer(t, &sshmesh.Server{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if _, err := ts.dialFrom(t, clientAddr, "nobody", nil); err == nil {
		t.Fatal("nobody logged in")
	}
	log.WaitFor(t, `msg="conn closed"`)
	if l := log.String(); !strings.Contains(l, `reason="login refused: rule ssh[0] rejects nobody"`) || strings.Contains(l, "no authentication methods") {
		t.Errorf("log:\n%s\nwant conn closed with the refusal as its reason", l)
	}
}

// TestRegisteredFeatures: an embedder's subsystem, channel type and global
// request are served, with the conn's identity, beside the built-in ones.
func TestRegisteredFeatures(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { io.WriteString(s, "default handler") }),
		Subsystems: map[string]sshmesh.Handler{
			"echo": sshmesh.HandlerFunc(func(s *sshmesh.Session) { io.Copy(s, s) }),
		},
		Channels: map[string]sshmesh.ChannelHandler{
			"hello@example.com": func(_ context.Context, conn sshmesh.ConnInfo, nch ssh.NewChannel) {
				ch, reqs, err := nch.Accept()
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				io.WriteString(ch, "hello "+conn.LocalUser()+" "+string(nch.ExtraData()))
				ch.Close()
			},
		},
		GlobalRequests: map[string]sshmesh.RequestHandler{
			"whoami@example.com": func(_ context.Context, conn sshmesh.ConnInfo, req *ssh.Request) (bool, []byte) {
				return true, []byte(conn.Identity().User)
			},
		},
	})
	c := ts.dial(t, "ann")

	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	in, _ := sess.StdinPipe()
	outp, _ := sess.StdoutPipe()
	if err := sess.RequestSubsystem("echo"); err != nil {
		t.Fatal(err)
	}
	io.WriteString(in, "ping")
	in.Close()
	if out, _ := io.ReadAll(outp); string(out) != "ping" {
		t.Errorf("echo subsystem: %q", out)
	}

	ch, reqs, err := c.OpenChannel("hello@example.com", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	got, _ := io.ReadAll(ch)
	if string(got) != "hello ann x" {
		t.Errorf("channel: %q", got)
	}
	if _, _, err := c.OpenChannel("other@example.com", nil); err == nil {
		t.Error("an unregistered channel type was accepted")
	}

	ok, reply, err := c.SendRequest("whoami@example.com", true, nil)
	if err != nil || !ok || string(reply) != "ann" {
		t.Errorf("global request: %v %q %v", ok, reply, err)
	}
	if ok, _, _ := c.SendRequest("other@example.com", true, nil); ok {
		t.Error("an unregistered global request succeeded")
	}

	// The default handler still serves what is not registered.
	s2, _ := c.NewSession()
	if out, err := s2.Output("x"); err != nil || string(out) != "default handler" {
		t.Errorf("exec: %q %v", out, err)
	}
}
