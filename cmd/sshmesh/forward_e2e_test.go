package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// Forwarding with the stock client: ssh -L, -D, -R and -A through
// `sshmesh nc` to an in-process Server, every socket on loopback.

// fwdServer serves a Server on a fresh mesh whose rule has the given
// forwarding options (the tests log in as nobody: a root server makes a TCP
// forward's sockets as the session's account, and every host has nobody), and returns the wg configs of two client nodes (two
// ssh processes at once need two: each brings its node up on its port),
// the server's address and the server's log.
func fwdServer(t *testing.T, d policy.Decision, handler sshmesh.Handler) (confs [2]string, host string, log *sshmeshtest.Buffer) {
	t.Helper()
	m := sshmeshtest.NewMesh(t, 3)
	server := m.Nodes[0]
	dir := t.TempDir()
	for i, client := range m.Nodes[1:] {
		client.Node.Close()
		confs[i] = client.WriteWGQuick(t, filepath.Join(dir, fmt.Sprintf("client%d.conf", i)))
	}
	log = &sshmeshtest.Buffer{}
	srv := &sshmesh.Server{
		Logger: slog.New(slog.NewTextHandler(log, nil)),
		Policy: policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
			d := d
			d.Action, d.LocalUser, d.Rule = policy.Accept, r.User, "ssh[7]"
			return d, nil
		}),
		Handler: handler,
		// A client whose last packets (its FIN) are lost when `sshmesh nc`
		// exits is found dead by keepalives; keep that short here.
		KeepAliveInterval: time.Second,
		KeepAliveCountMax: 5,
	}
	sshmeshtest.Serve(t, server, srv)
	return confs, server.Addr.String(), log
}

// fwdSSH starts the stock ssh through `sshmesh nc` in the background and
// kills it (by PID) at the end of the test. Its stderr is in the returned
// buffer.
func fwdSSH(t *testing.T, conf string, args ...string) (*exec.Cmd, *sshmeshtest.Buffer) {
	t.Helper()
	ssh := sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	all := append(append(meshClientOptions(conf), noAgent...), args...)
	cmd := exec.Command(ssh, all...)
	errOut := &sshmeshtest.Buffer{}
	cmd.Stderr = errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("ssh %s stderr:\n%s", strings.Join(args, " "), errOut.String())
		}
	})
	return cmd, errOut
}

// fwdFreePort returns a loopback TCP port that was free a moment ago.
func fwdFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// fwdWaitAccepting waits until 127.0.0.1:port accepts a conn, i.e. ssh's
// forward is in place.
func fwdWaitAccepting(t *testing.T, port int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("127.0.0.1:%d did not accept within 30 s", port)
}

// target is a loopback TCP service that echoes (or discards) and counts
// the conns it accepted.
type fwdTarget struct {
	ln      net.Listener
	mu      sync.Mutex
	accepts int
}

func newFwdTarget(t *testing.T, serve func(net.Conn)) *fwdTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &fwdTarget{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.mu.Lock()
			tg.accepts++
			tg.mu.Unlock()
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return tg
}

func fwdEcho(c net.Conn) { io.Copy(c, c) }

func (tg *fwdTarget) port() int { return tg.ln.Addr().(*net.TCPAddr).Port }

func (tg *fwdTarget) count() int {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.accepts
}

// fwdEchoCheck sends size random bytes through c while reading the echo, and
// compares the sha256 of both.
func fwdEchoCheck(t *testing.T, c net.Conn, size int) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if werr := <-errc; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil {
		t.Fatalf("read after %d bytes: %v", n, err)
	}
	if want := sha256.Sum256(data); n != int64(size) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("echo: %d bytes back, sha256 %x; want %d bytes, %x", n, h.Sum(nil), size, want)
	}
}

func TestStockSSHLocalForward(t *testing.T) {
	allowed, other := newFwdTarget(t, fwdEcho), newFwdTarget(t, fwdEcho)
	confs, host, log := fwdServer(t, policy.Decision{LocalForward: []string{fmt.Sprintf("127.0.0.1:%d", allowed.port())}}, nil)

	lp, lp2 := fwdFreePort(t), fwdFreePort(t)
	fwdSSH(t, confs[0], "-N", "-L", fmt.Sprintf("%d:127.0.0.1:%d", lp, allowed.port()),
		"-L", fmt.Sprintf("%d:127.0.0.1:%d", lp2, other.port()), "nobody@"+host)
	fwdWaitAccepting(t, lp)

	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", lp))
	if err != nil {
		t.Fatal(err)
	}
	fwdEchoCheck(t, c, 10<<20)
	c.Close()

	// Outside the patterns: ssh's local port accepts, the server refuses the
	// channel, the conn is closed and the target never sees it.
	c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", lp2))
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("refused forward delivered %d bytes", n)
	}
	c.Close()
	if n := other.count(); n != 0 {
		t.Errorf("the target outside the patterns saw %d conns", n)
	}
	log.WaitFor(t, fmt.Sprintf(`rule=ssh[7] kind=direct-tcpip target=127.0.0.1:%d reason="not allowed by the policy"`, other.port()))
}

// fwdSOCKS5Connect asks the SOCKS5 proxy at proxy for a conn to host:port
// (host a name or an IPv4 address), the way curl --socks5-hostname does.
func fwdSOCKS5Connect(t *testing.T, proxy int, host string, port int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", proxy))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req := []byte{5, 1, 0}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	rep := make([]byte, 2)
	if _, err := io.ReadFull(c, rep); err != nil || rep[0] != 5 || rep[1] != 0 {
		t.Fatalf("socks5 greeting: %v %v", rep, err)
	}
	req = []byte{5, 1, 0}
	if ip := net.ParseIP(host).To4(); ip != nil {
		req = append(append(req, 1), ip...)
	} else {
		req = append(append(req, 3, byte(len(host))), host...)
	}
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	rep = make([]byte, 10)
	if _, err := io.ReadFull(c, rep[:2]); err != nil || rep[1] != 0 {
		// Refused: OpenSSH closes the conn without a reply.
		c.Close()
		return nil
	}
	if _, err := io.ReadFull(c, rep[2:]); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Time{})
	return c
}

func TestStockSSHDynamicForward(t *testing.T) {
	allowed, other := newFwdTarget(t, fwdEcho), newFwdTarget(t, fwdEcho)
	confs, host, log := fwdServer(t, policy.Decision{LocalForward: []string{fmt.Sprintf("127.0.0.1:%d", allowed.port())}}, nil)
	sp := fwdFreePort(t)
	fwdSSH(t, confs[0], "-N", "-D", fmt.Sprintf("127.0.0.1:%d", sp), "nobody@"+host)
	fwdWaitAccepting(t, sp)

	for _, h := range []string{"127.0.0.1", "localhost"} {
		c := fwdSOCKS5Connect(t, sp, h, allowed.port())
		if c == nil {
			t.Fatalf("SOCKS to %s:%d refused", h, allowed.port())
		}
		fwdEchoCheck(t, c, 1<<20)
		c.Close()
	}
	if c := fwdSOCKS5Connect(t, sp, "127.0.0.1", other.port()); c != nil {
		c.Close()
		t.Errorf("SOCKS to a target outside the patterns was connected")
	}
	if other.count() != 0 {
		t.Errorf("the target outside the patterns saw a conn")
	}
	log.WaitFor(t, fmt.Sprintf("target=127.0.0.1:%d", other.port()))
}

func TestStockSSHRemoteForward(t *testing.T) {
	svc := newFwdTarget(t, fwdEcho) // the client side's service
	confs, host, log := fwdServer(t, policy.Decision{RemoteForward: []string{"127.0.0.1:*"}}, nil)

	rp := fwdFreePort(t)
	fwdSSH(t, confs[0], "-N", "-o", "ExitOnForwardFailure=yes", "-R", fmt.Sprintf("%d:127.0.0.1:%d", rp, svc.port()), "nobody@"+host)
	fwdWaitAccepting(t, rp)
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", rp))
	if err != nil {
		t.Fatal(err)
	}
	fwdEchoCheck(t, c, 1<<20)
	c.Close()

	// A non-loopback bind the rule does not name: refused, ssh gives up.
	_, errOut, code := stockSSH(t, confs[1], "-N", "-o", "ExitOnForwardFailure=yes", "-R", fmt.Sprintf("0.0.0.0:%d:127.0.0.1:%d", fwdFreePort(t), svc.port()), "nobody@"+host)
	if code != 255 || !strings.Contains(errOut, "remote port forwarding failed") {
		t.Errorf("-R 0.0.0.0:...: exit %d, stderr %q; want 255 and a forwarding failure", code, errOut)
	}
	log.WaitFor(t, `kind=tcpip-forward target=0.0.0.0:`)
}

func TestStockSSHRemoteForwardOtherAddress(t *testing.T) {
	// An address other than loopback's default, which the rule names: allowed.
	// (127.0.0.2 stands for "not the default"; the test binds nothing off
	// the loopback interface.)
	svc := newFwdTarget(t, fwdEcho)
	confs, host, _ := fwdServer(t, policy.Decision{RemoteForward: []string{"127.0.0.2:*"}}, nil)
	rp := fwdFreePort(t)
	fwdSSH(t, confs[0], "-N", "-o", "ExitOnForwardFailure=yes", "-R", fmt.Sprintf("127.0.0.2:%d:127.0.0.1:%d", rp, svc.port()), "nobody@"+host)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.2:%d", rp))
		if err == nil {
			fwdEchoCheck(t, c, 1<<16)
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("127.0.0.2:%d never accepted", rp)
		}
	}
	// The same rule refuses loopback's default.
	if _, errOut, code := stockSSH(t, confs[1], "-N", "-o", "ExitOnForwardFailure=yes", "-R", fmt.Sprintf("%d:127.0.0.1:%d", fwdFreePort(t), svc.port()), "nobody@"+host); code != 255 {
		t.Errorf("-R on 127.0.0.1 with a rule for 127.0.0.2 only: exit %d, %s", code, errOut)
	}
}

// fwdAgentSSH runs the stock ssh like stockSSH, but with the agent at sock
// in SSH_AUTH_SOCK: stockSSH sets IdentityAgent=none, with which ssh -A
// does not forward (ForwardAgent=PATH neither).
func fwdAgentSSH(t *testing.T, conf, sock string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	all := append(append(meshClientOptions(conf), "-o", "IdentitiesOnly=yes", "-o", "IdentityFile=/dev/null"), args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sshmeshtest.NeedBinary(t, "ssh", "openssh-client"), all...)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		t.Fatalf("ssh: %v", err)
	}
	return so.String(), se.String(), cmd.ProcessState.ExitCode()
}

// fwdStartAgent starts a real ssh-agent holding a fresh ed25519 key
// (comment sshmesh-e2e-agent-key), ends it by PID at the end of the test,
// and returns its socket.
func fwdStartAgent(t *testing.T) string {
	t.Helper()
	agentBin := sshmeshtest.NeedBinary(t, "ssh-agent", "openssh-client")
	keygen := sshmeshtest.NeedBinary(t, "ssh-keygen", "openssh-client")
	add := sshmeshtest.NeedBinary(t, "ssh-add", "openssh-client")
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	ag := exec.Command(agentBin, "-a", sock, "-D")
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Process.Kill(); ag.Wait() })
	key := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "sshmesh-e2e-agent-key", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ssh-agent did not make its socket")
		}
	}
	a := exec.Command(add, key)
	a.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := a.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, out)
	}

	return sock
}

func TestStockSSHAgentForward(t *testing.T) {
	sshmeshtest.NeedRoot(t) // LoginHandler runs a real shell as root
	sock := fwdStartAgent(t)
	confs, host, log := fwdServer(t, policy.Decision{AgentForward: true}, nil)
	out, errOut, code := fwdAgentSSH(t, confs[1], sock, "-A", "root@"+host,
		`ssh-add -l; d=$(dirname "$SSH_AUTH_SOCK"); echo "dir=$d"; stat -c '%a %U' "$d"`)
	if code != 0 || !strings.Contains(out, "sshmesh-e2e-agent-key (ED25519)") || !strings.Contains(out, "\n700 root\n") {
		t.Fatalf("ssh -A root@ ssh-add -l: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	_, d, _ := strings.Cut(out, "dir=")
	d, _, _ = strings.Cut(d, "\n")
	if !strings.HasPrefix(d, "/tmp/sshmesh-agent-") {
		t.Fatalf("agent directory %q", d)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Lstat(d); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			ents, _ := os.ReadDir(d)
			t.Fatalf("%s still there after the conn ended, holding %v; log:\n%s\nssh:\n%s", d, ents, log.String(), errOut)
		}
	}
	log.WaitFor(t, "kind=agent target=/tmp/sshmesh-agent-")

	// Without -A: no socket, no variable.
	out, _, _ = fwdAgentSSH(t, confs[1], sock, "-a", "root@"+host, `echo "sock=$SSH_AUTH_SOCK"`)
	if out != "sock=\n" {
		t.Errorf("without -A: %q", out)
	}
}

func TestStockSSHForwardingRefused(t *testing.T) {
	sshmeshtest.NeedRoot(t) // -A runs a login shell as root
	tg := newFwdTarget(t, fwdEcho)
	confs, host, log := fwdServer(t, policy.Decision{}, nil)
	dir := t.TempDir()

	// -L to a port and to a socket, -D: ssh listens locally; each channel
	// is refused.
	lp, sl, sp := fwdFreePort(t), fwdFreePort(t), fwdFreePort(t)
	fwdSSH(t, confs[0], "-N", "-L", fmt.Sprintf("%d:127.0.0.1:%d", lp, tg.port()), "-D", fmt.Sprintf("127.0.0.1:%d", sp),
		"-L", fmt.Sprintf("%d:%s", sl, filepath.Join(dir, "nothing.sock")), "root@"+host)
	fwdWaitAccepting(t, sp)
	for _, p := range []int{lp, sl} {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if n, err := c.Read(make([]byte, 1)); err == nil {
				t.Errorf("refused -L delivered %d bytes", n)
			}
			c.Close()
		}
	}
	if c := fwdSOCKS5Connect(t, sp, "127.0.0.1", tg.port()); c != nil {
		c.Close()
		t.Error("ssh -D connected")
	}
	if tg.count() != 0 {
		t.Error("the target saw a conn")
	}
	// -R on a port and on a socket: the requests fail.
	for _, r := range []string{fmt.Sprintf("%d:127.0.0.1:%d", fwdFreePort(t), tg.port()), filepath.Join(dir, "r.sock") + ":" + filepath.Join(dir, "l.sock")} {
		if _, errOut, code := stockSSH(t, confs[1], "-N", "-o", "ExitOnForwardFailure=yes", "-R", r, "root@"+host); code != 255 || !strings.Contains(errOut, "forwarding failed") {
			t.Errorf("-R %s: exit %d, %q", r, code, errOut)
		}
	}
	// -A: refused, so the shell has no SSH_AUTH_SOCK.
	ag := fwdStartAgent(t)
	out, _, _ := fwdAgentSSH(t, confs[1], ag, "-A", "root@"+host, `echo "sock=$SSH_AUTH_SOCK"`)
	if out != "sock=\n" {
		t.Errorf("agent refused, yet %q", out)
	}
	for _, kind := range []string{"direct-tcpip", "tcpip-forward", "direct-streamlocal", "streamlocal-forward", "agent"} {
		log.WaitFor(t, `rule=ssh[7] kind=`+kind+` `)
	}
	if n := strings.Count(log.String(), `reason="not allowed by the policy"`); n < 6 {
		t.Errorf("%d refusals with the reason in the log, want at least 6:\n%s", n, log.String())
	}
}

// TestForwardThroughput measures one-way bulk through ssh -L (stock
// client → sshmesh nc → mesh → Server → loopback sink) beside the same copy
// straight over loopback, in the same run, and logs MB/s and the ratio.
func TestForwardThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement; not in -short (CI=true runs it: .ci/run never passes -short)")
	}
	sink := newFwdTarget(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		binary.Write(c, binary.BigEndian, n)
	})
	confs, host, _ := fwdServer(t, policy.Decision{LocalForward: []string{fmt.Sprintf("127.0.0.1:%d", sink.port())}}, nil)
	lp := fwdFreePort(t)
	fwdSSH(t, confs[0], "-N", "-L", fmt.Sprintf("%d:127.0.0.1:%d", lp, sink.port()), "nobody@"+host)
	fwdWaitAccepting(t, lp)

	// Up to 128 MiB or 3 s, whichever comes first (under -race it is time).
	const size = 128 << 20
	measure := func(port int) float64 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 256<<10)
		start := time.Now()
		sent := 0
		for sent < size && time.Since(start) < 3*time.Second {
			if _, err := c.Write(buf); err != nil {
				t.Fatal(err)
			}
			sent += len(buf)
		}
		c.(*net.TCPConn).CloseWrite()
		var n int64
		if err := binary.Read(c, binary.BigEndian, &n); err != nil || n != int64(sent) {
			t.Fatalf("sink got %d bytes (%v), want %d", n, err, sent)
		}
		return float64(sent) / 1e6 / time.Since(start).Seconds()
	}
	measure(lp) // warm up the mesh and the channel
	fwd := measure(lp)
	direct := measure(sink.port())
	t.Logf("ssh -L over the mesh: %.0f MB/s; direct loopback: %.0f MB/s; ratio %.3f (%.1f%%)", fwd, direct, fwd/direct, 100*fwd/direct)
}
