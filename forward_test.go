package sshmesh_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/forward"
	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// forwardPolicy accepts every login as the same local user with the given
// forwarding options, under rule "ssh[4]".
func forwardPolicy(local, remote []string, agentFwd bool) policy.Policy {
	return policy.Func(func(ctx context.Context, r policy.Request) (policy.Decision, error) {
		return policy.Decision{Action: policy.Accept, LocalUser: r.User, Rule: "ssh[4]",
			LocalForward: local, RemoteForward: remote, AgentForward: agentFwd}, nil
	})
}

// forwardUser is the login of the TCP forwarding tests: an account every
// host has, since a root server makes a forward's sockets as the session's
// local user (and refuses for a name that is no account).
const forwardUser = "nobody"

// echoServer listens on loopback, echoes every conn and counts accepts.
type echoServer struct {
	ln      net.Listener
	mu      sync.Mutex
	accepts int
}

func newEchoServer(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.accepts++
			e.mu.Unlock()
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	return e
}

func (e *echoServer) port() int { return e.ln.Addr().(*net.TCPAddr).Port }

func (e *echoServer) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.accepts
}

// roundTrip writes msg to c, half-closes and reads everything back.
func roundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestForwardLocalPort(t *testing.T) {
	allowed, other := newEchoServer(t), newEchoServer(t)
	var log testkit.Buffer
	ts := startServer(t, &sshmesh.Server{Logger: log.Logger(),
		Policy: forwardPolicy([]string{fmt.Sprintf("127.0.0.1:%d", allowed.port())}, nil, false)})
	cl := ts.dial(t, forwardUser)

	for _, host := range []string{"127.0.0.1", "localhost"} {
		c, err := cl.Dial("tcp", fmt.Sprintf("%s:%d", host, allowed.port()))
		if err != nil {
			t.Fatalf("dial %s through the server: %v", host, err)
		}
		if got := roundTrip(t, c, "hello "+host); got != "hello "+host {
			t.Errorf("echo through %s: got %q", host, got)
		}
		c.Close()
	}

	_, err := cl.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", other.port()))
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited || !strings.Contains(oce.Message, "not allowed by the policy") {
		t.Errorf("dial outside the patterns: err %v, want a Prohibited refusal", err)
	}
	if n := other.count(); n != 0 {
		t.Errorf("the refused target saw %d conns, want 0", n)
	}
	if l := log.String(); !strings.Contains(l, `msg="forwarding refused"`) || !strings.Contains(l, "rule=ssh[4] kind=direct-tcpip target=127.0.0.1:"+fmt.Sprint(other.port())) {
		t.Errorf("log does not name the rule and target of the refusal:\n%s", l)
	}
}

// TestForwardRegisteredLikeAnEmbedders: forwarding's handlers take the
// ConnInfo every registered handler gets, so an embedder can wrap one in
// Server.Channels, and the policy still decides inside it.
func TestForwardRegisteredLikeAnEmbedders(t *testing.T) {
	allowed, other := newEchoServer(t), newEchoServer(t)
	var calls atomic.Int32
	ts := startServer(t, &sshmesh.Server{
		Policy: forwardPolicy([]string{fmt.Sprintf("127.0.0.1:%d", allowed.port())}, nil, false),
		Channels: map[string]sshmesh.ChannelHandler{
			"direct-tcpip": func(ctx context.Context, conn sshmesh.ConnInfo, nch ssh.NewChannel) {
				calls.Add(1)
				forward.DirectTCPIP(ctx, conn, nch)
			},
		},
	})
	cl := ts.dial(t, forwardUser)
	c, err := cl.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", allowed.port()))
	if err != nil {
		t.Fatalf("dial through the wrapped handler: %v", err)
	}
	if got := roundTrip(t, c, "hello"); got != "hello" {
		t.Errorf("echo: got %q", got)
	}
	c.Close()
	if _, err := cl.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", other.port())); err == nil {
		t.Errorf("dial outside the policy's patterns through the wrapped handler succeeded")
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("the registered handler served %d channels, want 2", n)
	}
}

func TestForwardRemotePort(t *testing.T) {
	var log testkit.Buffer
	ts := startServer(t, &sshmesh.Server{Logger: log.Logger(),
		Policy: forwardPolicy(nil, []string{"127.0.0.1:*"}, false)})
	cl := ts.dial(t, forwardUser)

	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := cl.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("remote listen %s: %v", addr, err)
		}
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.Copy(c, c)
			c.Close()
		}()
		port := ln.Addr().(*net.TCPAddr).Port
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("dial the server's forwarded port: %v", err)
		}
		if got := roundTrip(t, c, "via -R"); got != "via -R" {
			t.Errorf("echo through -R %s: got %q", addr, got)
		}
		c.Close()
		// Cancel: the port is closed again.
		ln.Close()
		waitRefused(t, port)
	}

	// Not loopback: refused (the rule covers only 127.0.0.1).
	if ln, err := cl.Listen("tcp", "0.0.0.0:0"); err == nil {
		ln.Close()
		t.Errorf("listen on 0.0.0.0 was allowed with remoteForward 127.0.0.1:*")
	}
	// A privileged port without a root session.
	if ln, err := cl.Listen("tcp", "127.0.0.1:1023"); err == nil {
		ln.Close()
		t.Errorf("listen on port 1023 was allowed for a non-root session")
	}
	if l := log.String(); !strings.Contains(l, "kind=tcpip-forward target=0.0.0.0:0 reason=\"not allowed by the policy\"") ||
		!strings.Contains(l, "ports below 1024 need a root session") {
		t.Errorf("log lacks the refusals:\n%s", l)
	}
}

// waitRefused waits until nothing listens on the loopback port.
func waitRefused(t *testing.T, port int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return
		}
		c.Close()
	}
	t.Errorf("port %d still accepts after cancel", port)
}

func TestRemoteListenerClosedWithConn(t *testing.T) {
	ts := startServer(t, &sshmesh.Server{Policy: forwardPolicy(nil, []string{"127.0.0.1:*"}, false)})
	cl := ts.dial(t, forwardUser)
	ln, err := cl.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	cl.Close()
	waitRefused(t, port)
}

func TestForwardingRefusedByRule(t *testing.T) {
	sshmeshtest.NeedRoot(t) // the socket kinds resolve a real user
	target := newEchoServer(t)
	var log testkit.Buffer
	ts := startServer(t, &sshmesh.Server{Logger: log.Logger(), Policy: forwardPolicy(nil, nil, false),
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { fmt.Fprint(s, s.AgentSocket()) })})
	cl := ts.dial(t, "root")

	if _, err := cl.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", target.port())); err == nil {
		t.Error("direct-tcpip allowed")
	}
	if _, err := cl.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Error("tcpip-forward allowed")
	}
	if _, err := cl.Dial("unix", "/tmp/nothing.sock"); err == nil {
		t.Error("direct-streamlocal allowed")
	}
	if _, err := cl.ListenUnix("/tmp/nothing.sock"); err == nil {
		t.Error("streamlocal-forward allowed")
	}
	sess, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.RequestAgentForwarding(sess); err == nil {
		t.Error("auth-agent-req allowed")
	}
	if out, _ := sess.Output(""); len(out) != 0 {
		t.Errorf("AgentSocket() = %q after a refused request", out)
	}
	if target.count() != 0 {
		t.Errorf("the target saw a conn")
	}
	l := log.String()
	for _, kind := range []string{"direct-tcpip", "tcpip-forward", "direct-streamlocal", "streamlocal-forward", "agent"} {
		if !strings.Contains(l, "rule=ssh[4] kind="+kind+" ") || !strings.Contains(l, `reason="not allowed by the policy"`) {
			t.Errorf("no refusal of %s with rule and reason in the log", kind)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", l)
	}
}

func TestForwardHandlerDecides(t *testing.T) {
	a, b := newEchoServer(t), newEchoServer(t)
	var mu sync.Mutex
	var seen []string
	ts := startServer(t, &sshmesh.Server{
		// The rule allows everything; the handler narrows it to a.
		Policy: forwardPolicy([]string{"*:*"}, []string{"*:*"}, true),
		Forwarding: sshmesh.ForwardHandlerFunc(func(ctx context.Context, r sshmesh.ForwardRequest) error {
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%v %s %v %v", r.Kind, r.Host, r.Addr, r.AllowedByRule()))
			mu.Unlock()
			if r.Kind == sshmesh.LocalPort && int(r.Addr.Port()) == a.port() {
				return nil
			}
			return errors.New("appliance says no")
		}),
	})
	cl := ts.dial(t, forwardUser)
	c, err := cl.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", a.port()))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	_, err = cl.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b.port()))
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || !strings.Contains(oce.Message, "appliance says no") {
		t.Errorf("handler refusal: %v", err)
	}
	if _, err := cl.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Error("tcpip-forward allowed though the handler refuses")
	}
	want := []string{
		fmt.Sprintf("direct-tcpip 127.0.0.1 127.0.0.1:%d true", a.port()),
		fmt.Sprintf("direct-tcpip 127.0.0.1 127.0.0.1:%d true", b.port()),
		"tcpip-forward 127.0.0.1 127.0.0.1:0 true",
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("requests the handler saw (-want +got):\n%s", diff)
	}
}

func TestAllowedByRule(t *testing.T) {
	d := policy.Decision{LocalForward: []string{"127.0.0.1:5432", "db.internal:*", "/tmp/*.sock"}, RemoteForward: []string{"127.0.0.1:*"}}
	tests := []struct {
		r    sshmesh.ForwardRequest
		want bool
	}{
		{sshmesh.ForwardRequest{Kind: sshmesh.LocalPort, Host: "127.0.0.1", Addr: ap("127.0.0.1:5432")}, true},
		{sshmesh.ForwardRequest{Kind: sshmesh.LocalPort, Host: "localhost", Addr: ap("127.0.0.1:5432")}, true}, // a name, checked by its address
		{sshmesh.ForwardRequest{Kind: sshmesh.LocalPort, Host: "localhost", Addr: ap("[::1]:5432")}, false},
		{sshmesh.ForwardRequest{Kind: sshmesh.LocalPort, Host: "127.0.0.1", Addr: ap("127.0.0.1:5433")}, false},
		{sshmesh.ForwardRequest{Kind: sshmesh.LocalPort, Host: "db.internal", Addr: ap("10.1.2.3:80")}, true}, // by name
		{sshmesh.ForwardRequest{Kind: sshmesh.LocalPort, Host: "10.1.2.3", Addr: ap("10.1.2.3:80")}, false},
		{sshmesh.ForwardRequest{Kind: sshmesh.RemotePort, Host: "", Addr: ap("127.0.0.1:0")}, true},
		{sshmesh.ForwardRequest{Kind: sshmesh.RemotePort, Host: "0.0.0.0", Addr: ap("0.0.0.0:8080")}, false},
		{sshmesh.ForwardRequest{Kind: sshmesh.LocalSocket, Path: "/tmp/a.sock"}, true},
		{sshmesh.ForwardRequest{Kind: sshmesh.LocalSocket, Path: "/tmp/d/a.sock"}, false},
		{sshmesh.ForwardRequest{Kind: sshmesh.RemoteSocket, Path: "/tmp/a.sock"}, false},
		{sshmesh.ForwardRequest{Kind: sshmesh.Agent}, false},
	}
	for _, tt := range tests {
		tt.r.Decision = d
		if got := tt.r.AllowedByRule(); got != tt.want {
			t.Errorf("%v %q %v %q: AllowedByRule() = %v, want %v", tt.r.Kind, tt.r.Host, tt.r.Addr, tt.r.Path, got, tt.want)
		}
	}
}

func TestForwardUnixSockets(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	dir, err := os.MkdirTemp("/tmp", "sshmesh-fwd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	open := filepath.Join(dir, "open") // nobody may write here
	closed := filepath.Join(dir, "closed")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	os.Mkdir(closed, 0o700)
	os.Symlink("/etc", filepath.Join(open, "link"))

	var log testkit.Buffer
	ts := startServer(t, &sshmesh.Server{Logger: log.Logger(),
		Policy: forwardPolicy([]string{dir + "/*/*", dir + "/*/*/*"}, []string{dir + "/*/*", dir + "/*/*/*"}, false)})
	cl := ts.dial(t, "nobody")

	// -R on a socket: made as nobody, 0600, removed on cancel.
	sock := filepath.Join(open, "r.sock")
	ln, err := cl.ListenUnix(sock)
	if err != nil {
		t.Fatalf("ListenUnix %s: %v\n%s", sock, err, log.String())
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	uid := fileUID(fi)
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 || uid != 65534 {
		t.Errorf("socket %s: mode %v uid %d, want a 0600 socket of nobody (65534)", sock, fi.Mode(), uid)
	}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, c, "unix -R"); got != "unix -R" {
		t.Errorf("echo through the -R socket: %q", got)
	}
	c.Close()
	if entries, _ := os.ReadDir(open); len(entries) != 2 { // r.sock and link, no temporary dir left
		t.Errorf("%s holds %v", open, entries)
	}
	ln.Close()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Lstat(sock); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there after cancel", sock)
		}
	}

	// -L to a socket the user may write.
	target := filepath.Join(open, "t.sock")
	tl, err := net.Listen("unix", target)
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	os.Chmod(target, 0o666)
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			io.Copy(c, c)
			c.Close()
		}
	}()
	c, err = cl.Dial("unix", target)
	if err != nil {
		t.Fatalf("Dial unix %s: %v", target, err)
	}
	if got := roundTrip(t, c, "unix -L"); got != "unix -L" {
		t.Errorf("echo through the -L socket: %q", got)
	}
	c.Close()
	os.Chmod(target, 0o600) // root's now: nobody may not connect
	if _, err := cl.Dial("unix", target); err == nil {
		t.Error("connected nobody to a 0600 socket of root")
	}

	// Refused: a directory nobody may not write, a symlink on the way, a
	// path outside the allowed roots (the rule would allow it).
	for _, p := range []string{filepath.Join(closed, "x.sock"), filepath.Join(open, "link", "x.sock")} {
		if l, err := cl.ListenUnix(p); err == nil {
			l.Close()
			t.Errorf("ListenUnix %s allowed", p)
		}
	}
	if _, err := os.Lstat("/etc/x.sock"); err == nil {
		t.Error("a socket appeared in /etc")
	}
	l := log.String()
	for _, want := range []string{`reason="connect: permission denied"`, `reason="mkdir: permission denied"`, "a component of the path is a symlink"} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q:\n%s", want, l)
		}
	}
}

func TestForwardAgent(t *testing.T) {
	sshmeshtest.NeedRoot(t) // the socket is chowned to the mapped user
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv, Comment: "test-key"}); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		Sock, Keys string
		DirMode    os.FileMode
		DirUid     uint32
	}
	got := make(chan seen, 1)
	ts := startServer(t, &sshmesh.Server{Policy: forwardPolicy(nil, nil, true),
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
			var v seen
			v.Sock = s.AgentSocket()
			if fi, err := os.Stat(filepath.Dir(v.Sock)); err == nil {
				v.DirMode, v.DirUid = fi.Mode().Perm(), fileUID(fi)
			}
			if c, err := net.Dial("unix", v.Sock); err == nil {
				keys, err := agent.NewClient(c).List()
				if err != nil {
					v.Keys = err.Error()
				}
				for _, k := range keys {
					v.Keys += k.Comment
				}
				c.Close()
			}
			got <- v
		})})
	cl := runWithAgent(t, ts, keyring)
	v := <-got
	if !strings.HasPrefix(v.Sock, "/tmp/sshmesh-agent-") || v.Keys != "test-key" || v.DirMode != 0o700 || v.DirUid != 65534 {
		t.Errorf("agent: %+v; want a socket under /tmp/sshmesh-agent-*, key test-key, directory 0700 of nobody", v)
	}
	cl.Close()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Lstat(filepath.Dir(v.Sock)); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there after the conn ended", filepath.Dir(v.Sock))
		}
	}
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// TestForwardNoLeak: conns with forwards of every TCP kind, copies in
// flight, then the client goes away: the goroutines and listeners go too.
func TestForwardNoLeak(t *testing.T) {
	target := newEchoServer(t)
	ts := startServer(t, &sshmesh.Server{Policy: forwardPolicy([]string{"127.0.0.1:*"}, []string{"127.0.0.1:*"}, false)})
	waitServing(t)
	before := serverGoroutines()
	for range 5 {
		cl := ts.dial(t, forwardUser)
		ln, err := cl.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { // accept and hold the forwarded conns
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		var held []net.Conn
		for range 4 {
			c, err := cl.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", target.port()))
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, "x") // an open copy, mid-stream
			held = append(held, c)
			r, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, r) // a forwarded-tcpip conn, open at the end
		}
		cl.Close()
		for _, c := range held {
			defer c.Close()
		}
		waitRefused(t, ln.Addr().(*net.TCPAddr).Port)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n := serverGoroutines()
		if n <= before {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d server goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
	}
}

// waitServing waits for Serve to have started its goroutines (the peer
// watch is the last it starts before accepting), so that they are in a
// count taken next. (A sleep instead lets a loaded machine's late Serve
// count its watch as a leak.)
func waitServing(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		buf := make([]byte, 4<<20)
		if strings.Contains(string(buf[:runtime.Stack(buf, true)]), "github.com/sshmesh/sshmesh.(*Server).watchPeers(") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("Serve has not started its peer watch after 20 s")
		}
	}
}

// serverGoroutines counts the goroutines running the server's code (the
// x/crypto client's are not counted, nor an open of x/crypto's that its
// mux will never answer: when the conn closes just as a forwarded-tcpip
// open goes out, x/crypto's OpenChannel waits forever, and the server
// gives up on it instead, see TestOpenChannelGivesUpWhenConnEnds).
func serverGoroutines() int {
	buf := make([]byte, 4<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "github.com/sshmesh/sshmesh.") && !strings.Contains(g, "golang.org/x/crypto/ssh.(*mux).openChannel(") {
			n++
		}
	}
	return n
}

// BenchmarkForwardLocalPort: bulk through a direct-tcpip channel (x/crypto
// client over loopback TCP, no mesh) to a loopback sink, beside
// BenchmarkLoopbackCopy, the same copy without SSH.
func BenchmarkForwardLocalPort(b *testing.B) {
	sink := newSink(b)
	ts := startServer(b, &sshmesh.Server{Policy: forwardPolicy([]string{"127.0.0.1:*"}, nil, false)})
	c, err := ts.dialFrom(b, clientAddr, forwardUser, nil)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := c.Dial("tcp", sink)
	if err != nil {
		b.Fatal(err)
	}
	benchCopy(b, conn)
}

func BenchmarkLoopbackCopy(b *testing.B) {
	conn, err := net.Dial("tcp", newSink(b))
	if err != nil {
		b.Fatal(err)
	}
	benchCopy(b, conn)
}

func newSink(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Write([]byte{1})
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func benchCopy(b *testing.B, conn net.Conn) {
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := conn.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	conn.(interface{ CloseWrite() error }).CloseWrite()
	io.ReadFull(conn, make([]byte, 1)) // the sink has it all
	b.StopTimer()
	conn.Close()
}

// TestRootAliasIsRoot: an account with uid 0 under another name (a
// toor-style alias) is root for every rule and check, as sshd's
// PermitRootLogin judges it: "*" does not let it in, a rule naming it
// does, and its sessions may then listen on ports below 1024 (-R).
func TestRootAliasIsRoot(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	alias := testkit.NewUser(t, testkit.UserOptions{Shell: "/bin/sh", RootAlias: true}).Name
	m := sshmeshtest.NewMesh(t, 2)
	server, laptop := m.Nodes[0], m.Nodes[1]
	docWith := func(users string) *policy.Document {
		t.Helper()
		doc, err := policy.Parse([]byte(fmt.Sprintf(`{
			"nodes": {"server": {"key": %q, "tags": ["tag:server"]}, "laptop": {"key": %q, "owner": "ann@example.com"}},
			"tagOwners": {"tag:server": ["ann@example.com"]},
			"ssh": [{"action": "accept", "src": ["laptop"], "dst": ["tag:server"], "users": [%s], "remoteForward": ["127.0.0.1:*"]}],
		}`, server.Key.Public(), laptop.Key.Public(), users)), "alias.hujson")
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}
	srv := &sshmesh.Server{Policy: docWith(`"*", "autogroup:nonroot"`), Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { s.Exit(0) })}
	sshmeshtest.Serve(t, server, srv)
	if _, err := sshmeshtest.Dial(t, laptop, server, srv, alias); err == nil {
		t.Fatalf("%s (uid 0) logged in through users [* autogroup:nonroot]", alias)
	}
	srv.SetPolicy(docWith(fmt.Sprintf("%q", alias)))
	cl, err := sshmeshtest.Dial(t, laptop, server, srv, alias)
	if err != nil {
		t.Fatalf("%s through a rule that names it: %v", alias, err)
	}
	port := freePrivilegedPort(t)
	ln, err := cl.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("listen on privileged port %d as %s (uid 0): %v", port, alias, err)
	}
	ln.Close()
}

// freePrivilegedPort returns a loopback TCP port below 1024 that nothing
// listens on now.
func freePrivilegedPort(t *testing.T) int {
	t.Helper()
	for p := 1023; p > 900; p-- {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port in 901-1023")
	return 0
}

// TestTCPForwardAsUser: the sockets of TCP forwarding belong to the
// session's local user, as sshd's do (its session process dials and
// listens): a loopback service that trusts its client's uid (an sshmesh
// proxy, ident, sock_diag) sees the user, never root, and a root server
// refuses to forward for a login name that is no account.
func TestTCPForwardAsUser(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	u, err := user.Lookup(forwardUser)
	if err != nil {
		t.Fatal(err)
	}
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	ts := startServer(t, &sshmesh.Server{Policy: forwardPolicy([]string{"127.0.0.1:*"}, []string{"127.0.0.1:*"}, false)})
	cl := ts.dial(t, forwardUser)
	fc, err := cl.Dial("tcp", target.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	sc, err := target.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if got := tcpSocketUID(t, sc.RemoteAddr().(*net.TCPAddr).Port); got != u.Uid {
		t.Errorf("ssh -L dialed as uid %s, want %s (%s)", got, u.Uid, forwardUser)
	}
	ln, err := cl.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := tcpSocketUID(t, ln.Addr().(*net.TCPAddr).Port); got != u.Uid {
		t.Errorf("ssh -R listens as uid %s, want %s (%s)", got, u.Uid, forwardUser)
	}

	ghost := ts.dial(t, "no-such-account-x")
	if c, err := ghost.Dial("tcp", target.Addr().String()); err == nil {
		c.Close()
		t.Error("a root server forwarded for a login that is no account (as root)")
	}
}

// tcpSocketUID returns the uid that owns this host's IPv4 TCP socket whose
// local port is port, from /proc/net/tcp.
func tcpSocketUID(t *testing.T, port int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if fs := strings.Fields(line); len(fs) > 7 && strings.HasSuffix(fs[1], want) {
			return fs[7]
		}
	}
	t.Fatalf("no TCP socket on local port %d", port)
	return ""
}

// runWithAgent logs in as nobody with keyring forwarded as the agent, runs
// one session and returns the client.
func runWithAgent(t *testing.T, ts *testServer, keyring agent.Agent) *ssh.Client {
	t.Helper()
	cl := ts.dial(t, "nobody")
	if err := agent.ForwardToAgent(cl, keyring); err != nil {
		t.Fatal(err)
	}
	sess, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.RequestAgentForwarding(sess); err != nil {
		t.Fatal(err)
	}
	if err := sess.Run(""); err != nil {
		t.Fatal(err)
	}
	return cl
}
