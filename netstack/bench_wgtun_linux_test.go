package netstack_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/meshkey"
	"golang.org/x/sys/unix"
)

// wgTun is a reference tunnel: wireguard-go on a kernel TUN device in
// each of two network namespaces joined by a veth pair, what a user of the
// kernel's TCP stack gets from userspace WireGuard on the same cores.
type wgTun struct {
	nsA, nsB string // A listens on 100.65.0.1, B dials from 100.65.0.2
	err      error  // why there is no tunnel
}

var (
	wgTunOnce sync.Once
	wgTunVal  *wgTun
	wgTunDown func()
)

// TestMain tears the reference tunnel down after the run, if a benchmark
// made one.
func TestMain(m *testing.M) {
	code := m.Run()
	if wgTunDown != nil {
		wgTunDown()
	}
	os.Exit(code)
}

// wgTunnel sets up the reference tunnel once per test binary (torn down
// by TestMain) and returns a listener in A and a dialer
// from B. It skips with the reason when it cannot: it needs root, ip, wg
// and wireguard-go.
func wgTunnel(b *testing.B) (net.Listener, func() (net.Conn, error)) {
	wgTunOnce.Do(func() { wgTunVal, wgTunDown = setupWGTun() })
	t := wgTunVal
	if t.err != nil {
		b.Skipf("no wireguard-go tunnel to compare with: %v", t.err)
	}
	var l net.Listener
	err := inNetns(t.nsA, func() (err error) {
		l, err = net.Listen("tcp", "100.65.0.1:0")
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	return l, func() (net.Conn, error) {
		var c net.Conn
		err := inNetns(t.nsB, func() (err error) {
			d := net.Dialer{Timeout: 15 * time.Second}
			c, err = d.Dial("tcp", addr)
			return err
		})
		return c, err
	}
}

// inNetns runs f on a thread in network namespace ns. Sockets made there
// stay in ns. The thread is not returned to the runtime.
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open(filepath.Join("/var/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

func setupWGTun() (t *wgTun, teardown func()) {
	t = &wgTun{}
	var undo []func()
	teardown = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	fail := func(err error) (*wgTun, func()) {
		teardown()
		return &wgTun{err: err}, func() {}
	}
	if os.Geteuid() != 0 {
		return fail(fmt.Errorf("needs root (network namespaces)"))
	}
	bins := map[string]string{}
	for _, name := range []string{"ip", "wg", "wireguard-go"} {
		p, err := exec.LookPath(name)
		if err != nil {
			return fail(fmt.Errorf("needs %s in PATH (Debian: iproute2, wireguard-tools, wireguard-go)", name))
		}
		bins[name] = p
	}
	ip, wg, wgGo := bins["ip"], bins["wg"], bins["wireguard-go"]
	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	t.nsA, t.nsB = "sshmesh-bench-a-"+id, "sshmesh-bench-b-"+id
	run := func(name string, args ...string) error {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	for _, ns := range []string{t.nsA, t.nsB} {
		if err := run(ip, "netns", "add", ns); err != nil {
			return fail(err)
		}
		undo = append(undo, func() { exec.Command(ip, "netns", "del", ns).Run() })
	}
	vethA, vethB := "sba"+id, "sbb"+id
	// Both ends live in the namespaces; deleting them deletes the pair.
	steps := [][]string{
		{"link", "add", vethA, "netns", t.nsA, "type", "veth", "peer", "name", vethB, "netns", t.nsB},
		{"-n", t.nsA, "addr", "add", "10.232.0.1/30", "dev", vethA},
		{"-n", t.nsB, "addr", "add", "10.232.0.2/30", "dev", vethB},
		{"-n", t.nsA, "link", "set", vethA, "up"},
		{"-n", t.nsB, "link", "set", vethB, "up"},
		{"-n", t.nsA, "link", "set", "lo", "up"},
		{"-n", t.nsB, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run(ip, s...); err != nil {
			return fail(err)
		}
	}
	keyA, err := meshkey.NewPrivate()
	if err != nil {
		return fail(err)
	}
	keyB, err := meshkey.NewPrivate()
	if err != nil {
		return fail(err)
	}
	type side struct {
		ns, ifc, addr, peerAddr, endpoint string
		key                               meshkey.Private
		peerKey                           meshkey.Public
	}
	sides := []side{
		{t.nsA, "swa" + id, "100.65.0.1", "100.65.0.2", "10.232.0.2:51820", keyA, keyB.Public()},
		{t.nsB, "swb" + id, "100.65.0.2", "100.65.0.1", "10.232.0.1:51820", keyB, keyA.Public()},
	}
	dir, err := os.MkdirTemp("", "sshmesh-bench-")
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { os.RemoveAll(dir) })
	for _, s := range sides {
		cmd := exec.Command(ip, "netns", "exec", s.ns, wgGo, "-f", s.ifc)
		cmd.Env = append(os.Environ(), "WG_PROCESS_FOREGROUND=1")
		if err := cmd.Start(); err != nil {
			return fail(fmt.Errorf("start wireguard-go: %w", err))
		}
		sock := filepath.Join("/var/run/wireguard", s.ifc+".sock")
		undo = append(undo, func() {
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			os.Remove(sock)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for ctx.Err() == nil { // polling for the UAPI socket
			if _, err := os.Stat(sock); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		conf := filepath.Join(dir, s.ifc+".conf")
		text := testkit.WGQuick{PrivateKey: s.key, ListenPort: 51820, Peers: []testkit.WGPeer{{PublicKey: s.peerKey,
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix(s.peerAddr + "/32")}, Endpoint: netip.MustParseAddrPort(s.endpoint)}}}.String()
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return fail(err)
		}
		for _, args := range [][]string{
			{"netns", "exec", s.ns, wg, "setconf", s.ifc, conf},
			{"-n", s.ns, "addr", "add", s.addr + "/32", "dev", s.ifc},
			{"-n", s.ns, "link", "set", s.ifc, "up"},
			{"-n", s.ns, "route", "add", s.peerAddr + "/32", "dev", s.ifc},
		} {
			if err := run(ip, args...); err != nil {
				return fail(err)
			}
		}
	}
	return t, teardown
}
