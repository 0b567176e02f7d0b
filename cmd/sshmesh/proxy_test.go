package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/checkpage"
	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// socksDial speaks the client side of a SOCKS5 CONNECT to target through
// the proxy at proxy, returning the conn and the reply code.
func socksDial(t *testing.T, proxy string, cmd byte, target netip.AddrPort) (net.Conn, byte) {
	t.Helper()
	c, code, err := socks5Connect(proxy, cmd, target)
	if err != nil {
		t.Fatal(err)
	}
	return c, code
}

func socks5Connect(proxy string, cmd byte, target netip.AddrPort) (net.Conn, byte, error) {
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		return nil, 0, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0} {
		c.Close()
		return nil, 0, fmt.Errorf("method reply %v, %v", m, err)
	}
	req := []byte{5, cmd, 0, 1}
	req = append(req, target.Addr().AsSlice()...)
	req = binary.BigEndian.AppendUint16(req, target.Port())
	c.Write(req)
	var rep [10]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("reply: %w", err)
	}
	c.SetDeadline(time.Time{})
	return c, rep[1], nil
}

// socks5ProxyEnv names the SOCKS5 proxy through which the test binary, run
// as `TEST-BINARY HOST PORT` with it set (see TestMain), connects stdin and
// stdout to HOST:PORT: a ProxyCommand for the stock ssh, which has no SOCKS
// client of its own (nor does a fresh machine have nc -X 5).
const socks5ProxyEnv = "SSHMESH_TEST_SOCKS5_PROXY"

func socks5ProxyCommand(proxy string, args []string) int {
	if len(args) != 2 {
		fmt.Fprintf(os.Stderr, "%s set: want HOST PORT, got %q\n", socks5ProxyEnv, args)
		return 2
	}
	target, err := netip.ParseAddrPort(net.JoinHostPort(args[0], args[1]))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	c, code, err := socks5Connect(proxy, 1, target)
	if err == nil && code != socksOK {
		err = fmt.Errorf("CONNECT %s: reply %d", target, code)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "socks5 %s: %v\n", proxy, err)
		return 1
	}
	go func() {
		io.Copy(c, os.Stdin)
		c.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(os.Stdout, c)
	return 0
}

func TestSOCKSProxy(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 2)
	server, client := m.Nodes[0], m.Nodes[1]
	ln, err := server.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close() })

	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &socksProxy{dial: client.Dial, logger: slog.New(slog.DiscardHandler), owner: uint32(os.Getuid())}
	done := make(chan error, 1)
	go func() { done <- p.serve(pl) }()
	t.Cleanup(func() { pl.Close(); <-done })

	c, code := socksDial(t, pl.Addr().String(), 1, netip.AddrPortFrom(server.Addr, 7))
	if code != socksOK {
		t.Fatalf("CONNECT: reply %d", code)
	}
	c.Write([]byte("hello mesh"))
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "hello mesh" {
		t.Errorf("echo %q", got)
	}

	if c, code := socksDial(t, pl.Addr().String(), 2, netip.AddrPortFrom(server.Addr, 7)); code != socksCmdUnsupported {
		t.Errorf("BIND: reply %d, want %d", code, socksCmdUnsupported)
	} else {
		c.Close()
	}
	if c, code := socksDial(t, pl.Addr().String(), 1, netip.AddrPortFrom(server.Addr, 9)); code == socksOK {
		t.Errorf("CONNECT to a closed port: reply %d", code)
	} else {
		c.Close()
	}

	// No method without authentication offered: refused.
	c2, _ := net.Dial("tcp", pl.Addr().String())
	c2.Write([]byte{5, 1, 2})
	var m2 [2]byte
	io.ReadFull(c2, m2[:])
	c2.Close()
	if m2 != [2]byte{5, 0xff} {
		t.Errorf("username/password only: reply %v, want 5 255", m2)
	}
}

func TestProxyFlags(t *testing.T) {
	var out, errb bytes.Buffer
	for _, addr := range []string{"0.0.0.0:1080", "192.0.2.1:1080", "localhost:1080"} {
		code := run(context.Background(), []string{"proxy", "--wg", "/nonexistent", "--socks5", addr}, stdio{strings.NewReader(""), &out, &errb})
		if code != 1 || !strings.Contains(errb.String(), "loopback") {
			t.Errorf("--socks5 %s: exit %d, %q; want refused", addr, code, errb.String())
		}
		errb.Reset()
	}
}

// TestNoticeWatcher: a notice is acted on only from the peer of the conn it
// names, for a tracked conn, with a URL on that peer; each URL opens once.
func TestNoticeWatcher(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 3)
	server, client, other := m.Nodes[0], m.Nodes[1], m.Nodes[2]
	sshLn, err := server.Listen("tcp", ":22")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sshLn.Close() })
	go func() {
		for {
			c, err := sshLn.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	var mu sync.Mutex
	var opened []string
	w := watchNotices(client.Node, func(u string) error {
		mu.Lock()
		defer mu.Unlock()
		opened = append(opened, u)
		return nil
	}, new(testkit.Buffer), slog.New(slog.DiscardHandler))
	if w == nil {
		t.Fatal("watchNotices failed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, "tcp", netip.AddrPortFrom(server.Addr, 22).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	untrack := w.track(conn)
	port := uint16(conn.LocalAddr().(*net.TCPAddr).Port)
	good := "http://100.64.0.1/check/OHJC-FpjaLofxm8bbY6BVQ"

	send := func(from *sshmeshtest.Node, n checkpage.Notice) {
		t.Helper()
		if err := checkpage.SendNotice(ctx, from.Dial, client.Addr, n); err != nil {
			t.Fatal(err)
		}
	}
	send(other, checkpage.Notice{ConnPort: port, URL: "http://100.64.0.3/check/OHJC-FpjaLofxm8bbY6BVQ"}) // not the conn's peer
	send(other, checkpage.Notice{ConnPort: port, URL: good})                                             // not the conn's peer
	send(server, checkpage.Notice{ConnPort: port + 1, URL: good})                                        // another conn
	send(server, checkpage.Notice{ConnPort: port, URL: "http://100.64.0.1/elsewhere"})                   // not a page
	send(server, checkpage.Notice{ConnPort: port, URL: good})
	send(server, checkpage.Notice{ConnPort: port, URL: good}) // again: no second open
	// Notices are handled asynchronously: let the good one be acted on
	// before the conn stops being tracked.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(opened)
		mu.Unlock()
		if n > 0 {
			break
		}
	}
	time.Sleep(200 * time.Millisecond) // and the repeated one too
	mu.Lock()
	first := slices.Clone(opened)
	mu.Unlock()
	// A server that sends notice after notice for one conn gets one local
	// link at a time, and at most maxOpensPerConn browser tabs.
	for i := range 5 {
		send(server, checkpage.Notice{ConnPort: port, URL: fmt.Sprintf("http://100.64.0.1/check/BBBBBBBBBBBBBBBBBBBBB%d", i)})
	}
	// Every notice handled (they are, concurrently), and the tabs they may
	// open opened: a handler opens its tab after it counted the notice, and
	// a loaded machine can hold it up between the two.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		w.mu.Lock()
		handled := w.opens[port] == 6
		w.mu.Unlock()
		mu.Lock()
		tabs := len(opened)
		mu.Unlock()
		if handled && tabs >= maxOpensPerConn {
			break
		}
	}
	time.Sleep(200 * time.Millisecond) // a tab beyond the limit would be open by now
	w.mu.Lock()
	links := len(w.links[port])
	w.mu.Unlock()
	mu.Lock()
	tabs := len(opened)
	mu.Unlock()
	if links != 1 || tabs != maxOpensPerConn {
		t.Errorf("after 6 notices for one conn: %d local links, %d tabs; want 1 and %d", links, tabs, maxOpensPerConn)
	}
	untrack()
	send(server, checkpage.Notice{ConnPort: port, URL: "http://100.64.0.1/check/AAAAAAAAAAAAAAAAAAAAAA"}) // conn over
	time.Sleep(500 * time.Millisecond)
	// What opened first is nc's local link to the good page, named after
	// the server's key, once.
	want := "http://" + checkpage.LinkHost(server.Key.Public()) + ":"
	if len(first) != 1 || !strings.HasPrefix(first[0], want) || !strings.HasSuffix(first[0], "/check/OHJC-FpjaLofxm8bbY6BVQ") {
		t.Errorf("opened %q, want only a local link %s…/check/OHJC-FpjaLofxm8bbY6BVQ", first, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(opened) != maxOpensPerConn {
		t.Errorf("a notice after the conn ended opened a tab: %q", opened)
	}
}

// TestProxyOtherLocalUser: `sshmesh proxy` lends its node's identity only to
// the user who runs it (here root): root's stock ssh logs in through it,
// another local user's client is cut off before the proxy reads a byte
// (issue 22, finding 5).
func TestProxyOtherLocalUser(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	ssh := sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	bash := sshmeshtest.NeedBinary(t, "bash", "bash")
	m := sshmeshtest.NewMesh(t, 2)
	server, client := m.Nodes[0], m.Nodes[1]
	client.Node.Close() // `sshmesh proxy` runs this node
	sshmeshtest.Serve(t, server, &sshmesh.Server{
		Policy: policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
			return policy.Decision{Action: policy.Accept, LocalUser: r.User}, nil
		}),
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
			fmt.Fprintf(s, "hello %s\n", s.Identity().User)
			s.Exit(3)
		}),
	})
	proxy, log := startCheckProxy(t, client.WriteWGQuick(t, filepath.Join(t.TempDir(), "client.conf")))

	// The owner, with the stock ssh.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := tool{env: []string{socks5ProxyEnv + "=" + proxy}}.run(t, ssh, "-F", "/dev/null",
		"-o", "ProxyCommand="+self+" %h %p", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", "-o", "IdentityAgent=none",
		"ann@"+server.Addr.String(), "true")
	if code != 3 || out != "hello ann\n" {
		t.Errorf("root's ssh through the proxy: exit %d, stdout %q, stderr %q; want 3 and hello ann", code, out, errOut)
	}

	// Another local user: a raw SOCKS5 CONNECT to the server's SSH port,
	// printing whatever comes back (with the proxy open to all: the
	// SOCKS5 replies, then the server's SSH banner).
	u := newLoginUser(t)
	proxyHost, proxyPort, _ := net.SplitHostPort(proxy)
	req := []byte{5, 1, 0, 5, 1, 0, 1}
	req = binary.BigEndian.AppendUint16(append(req, server.Addr.AsSlice()...), 22)
	var esc strings.Builder
	for _, b := range req {
		fmt.Fprintf(&esc, `\x%02x`, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "-c", `exec 3<>"/dev/tcp/$1/$2" || exit 9; printf "$3" >&3; exec cat <&3`,
		"socks5", proxyHost, proxyPort, esc.String())
	runAs(cmd, u.UID, u.GID)
	cmd.Dir = u.Home
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	// The proxy closes the conn unread: cat sees an end or, as bytes of
	// the request were left unread, a reset.
	err = cmd.Run()
	if so.Len() != 0 || ctx.Err() != nil {
		t.Errorf("%s's SOCKS5 client got %q (%v, stderr %q); want the conn closed at once", u.Name, so.String(), err, se.String())
	}
	log.WaitFor(t, fmt.Sprintf("uid=%d", u.UID))
	if !strings.Contains(log.String(), `msg="socks5 client refused: another local user's"`) {
		t.Errorf("the proxy's log does not say why:\n%s", log.String())
	}
}
