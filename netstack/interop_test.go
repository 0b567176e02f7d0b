package netstack_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/netstack"
)

// TestInteropWireGuardGo connects standard WireGuard (wireguard-go with a
// TUN device, configured by wg) to an in-process node. Everything lives in
// a network namespace the test creates: wireguard-go and a plain TCP
// client (bash's /dev/tcp) inside it, joined to the host by a veth pair
// whose two addresses exist only on that pair.
func TestInteropWireGuardGo(t *testing.T) {
	testkit.NeedRoot(t)
	ip := testkit.NeedBinary(t, "ip", "iproute2")
	wg := testkit.NeedBinary(t, "wg", "wireguard-tools")
	wgGo := testkit.NeedBinary(t, "wireguard-go", "wireguard-go")
	bash := testkit.NeedBinary(t, "bash", "bash")

	var rnd [3]byte
	rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	ns := "sshmesh-test-" + id
	vethHost, vethNS, wgIf := "smh"+id, "smn"+id, "smw"+id
	hostIP := netip.AddrFrom4([4]byte{10, 231, rnd[0], 2})
	nsIP := netip.AddrFrom4([4]byte{10, 231, rnd[0], 1})

	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run(ip, "netns", "add", ns)
	t.Cleanup(func() {
		// Deleting the namespace deletes its veth end and with it the pair.
		exec.Command(ip, "link", "del", vethHost).Run()
		if out, err := exec.Command(ip, "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	run(ip, "link", "add", vethHost, "type", "veth", "peer", "name", vethNS, "netns", ns)
	run(ip, "addr", "add", hostIP.String()+"/30", "dev", vethHost)
	run(ip, "link", "set", vethHost, "up")
	run(ip, "-n", ns, "addr", "add", nsIP.String()+"/30", "dev", vethNS)
	run(ip, "-n", ns, "link", "set", vethNS, "up")
	run(ip, "-n", ns, "link", "set", "lo", "up")

	// The namespace's WireGuard: wireguard-go in the foreground, ended by PID.
	wgGoCmd := exec.Command(ip, "netns", "exec", ns, wgGo, "-f", wgIf)
	wgGoCmd.Env = append(os.Environ(), "WG_PROCESS_FOREGROUND=1")
	var wgGoOut strings.Builder
	wgGoCmd.Stdout, wgGoCmd.Stderr = &wgGoOut, &wgGoOut
	if err := wgGoCmd.Start(); err != nil {
		t.Fatalf("start wireguard-go: %v", err)
	}
	sock := filepath.Join("/var/run/wireguard", wgIf+".sock")
	t.Cleanup(func() {
		wgGoCmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { wgGoCmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			wgGoCmd.Process.Kill()
			<-done
		}
		os.Remove(sock)
		if t.Failed() {
			t.Logf("wireguard-go output:\n%s", wgGoOut.String())
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) { // polling for the socket
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wireguard-go made no UAPI socket %s within 10s; output:\n%s", sock, wgGoOut.String())
		}
	}

	// Two in-process nodes, GRO on (the default) and off, both peers of
	// the namespace's WireGuard.
	nsKey := newKey(t)
	type meshNode struct {
		name string
		gro  bool
		addr netip.Addr
		node *netstack.Node
	}
	var nodes []meshNode
	conf := testkit.WGQuick{PrivateKey: nsKey, Addresses: []netip.Prefix{pfx("100.64.0.2/32")}, ListenPort: 51820}
	for i, mode := range []struct {
		name string
		gro  bool
	}{{"gro=on", true}, {"gro=off", false}} {
		key := newKey(t)
		addr := netip.AddrFrom4([4]byte{100, 64, 0, byte(1 + 2*i)})
		node := newNode(t, netstack.Config{
			PrivateKey:  key,
			Addresses:   []netip.Prefix{netip.PrefixFrom(addr, 32)},
			BindAddress: hostIP,
			DisableGRO:  !mode.gro,
			Peers: []netstack.Peer{{
				PublicKey:  nsKey.Public(),
				AllowedIPs: []netip.Prefix{pfx("100.64.0.2/32")},
				Endpoint:   netip.AddrPortFrom(nsIP, 51820),
			}},
		})
		nodes = append(nodes, meshNode{mode.name, mode.gro, addr, node})
		conf.Peers = append(conf.Peers, testkit.WGPeer{PublicKey: key.Public(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(addr, 32)}, Endpoint: netip.AddrPortFrom(hostIP, node.ListenPort())})
	}

	// A wg-quick file for the namespace side; wg setconf takes it without
	// the wg-quick-only Address line, which ip applies instead.
	if _, _, err := netstack.ParseConfig(strings.NewReader(conf.String()), "ns.conf"); err != nil {
		t.Fatalf("our parser refuses the namespace's wg-quick file: %v", err)
	}
	var setconf, address strings.Builder
	for line := range strings.Lines(conf.String()) {
		if v, ok := strings.CutPrefix(line, "Address = "); ok {
			address.WriteString(strings.TrimSpace(v))
			continue
		}
		setconf.WriteString(line)
	}
	dir := t.TempDir()
	confPath := filepath.Join(dir, wgIf+".conf")
	if err := os.WriteFile(confPath, []byte(setconf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	run(ip, "netns", "exec", ns, wg, "setconf", wgIf, confPath)
	run(ip, "-n", ns, "addr", "add", address.String(), "dev", wgIf)
	run(ip, "-n", ns, "link", "set", wgIf, "up")
	run(ip, "-n", ns, "route", "add", "100.64.0.0/29", "dev", wgIf)

	// inNS runs a bash script in the namespace.
	inNS := func(script string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, ip, "netns", "exec", ns, bash, "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("in the namespace: %s: %v\n%s", script, err, out)
		}
		return string(out)
	}
	for _, m := range nodes {
		t.Run(m.name, func(t *testing.T) {
			if err := m.node.WaitHandshake(testCtx(t, 15*time.Second), nsKey.Public()); err != nil {
				t.Fatal(err)
			}
			l, err := m.node.Listen("tcp", ":2222")
			if err != nil {
				t.Fatal(err)
			}
			acc := acceptAll(t, l)
			// serveNext runs f on the listener's next conn, in the
			// background, with a deadline; the conn is closed after.
			serveNext := func(d time.Duration, f func(c net.Conn)) {
				go func() {
					c, ok := <-acc.conns
					if !ok {
						return
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(d))
					f(c)
				}()
			}

			// Identity: the listener sees the namespace's mesh address and
			// key, and a line goes each way.
			type served struct {
				remote, peer, line string
				err                error
			}
			servedc := make(chan served, 1)
			serveNext(15*time.Second, func(c net.Conn) {
				s := served{remote: remoteAddr(t, c).String()}
				if k, ok := m.node.PeerForAddr(remoteAddr(t, c)); ok {
					s.peer = k.String()
				}
				s.line, s.err = bufio.NewReader(c).ReadString('\n')
				if s.err == nil {
					_, s.err = fmt.Fprintf(c, "peer %s\n", s.peer)
				}
				servedc <- s
			})
			out := inNS(fmt.Sprintf(`exec 3<>/dev/tcp/%s/2222 && echo hello-from-namespace >&3 && read -r line <&3 && echo "$line"`, m.addr))
			var s served
			select {
			case s = <-servedc:
			case <-time.After(10 * time.Second):
				t.Fatal("the listener served no conn")
			}
			if s.err != nil {
				t.Fatalf("serving the namespace's conn: %v", s.err)
			}
			if s.remote != "100.64.0.2" || s.peer != nsKey.Public().String() || s.line != "hello-from-namespace\n" {
				t.Errorf("listener saw remote %s, peer %q, line %q; want 100.64.0.2, %s, hello-from-namespace", s.remote, s.peer, s.line, nsKey.Public())
			}
			if got, want := strings.TrimSpace(out), "peer "+nsKey.Public().String(); got != want {
				t.Errorf("client got %q, want %q", got, want)
			}

			// Bulk, checksummed, each way: the kernel's TCP (with
			// wireguard-go's TUN offloads) against ours.
			size := netstack.BulkSize()
			want := make([]byte, size)
			rand.Read(want)
			sum := sha256.Sum256(want)
			up, down := filepath.Join(dir, m.name+".up"), filepath.Join(dir, m.name+".down")
			if err := os.WriteFile(up, want, 0o600); err != nil {
				t.Fatal(err)
			}
			merged := netstack.GROMerged(m.node)
			got := make(chan [sha256.Size]byte, 1)
			serveNext(2*time.Minute, func(c net.Conn) {
				h := sha256.New()
				n, err := io.Copy(h, c)
				if err != nil || n != size {
					t.Errorf("upload: read %d bytes, %v; want %d", n, err, size)
				}
				got <- [sha256.Size]byte(h.Sum(nil))
			})
			inNS(fmt.Sprintf(`exec 3<>/dev/tcp/%s/2222 && cat %q >&3 && exec 3>&-`, m.addr, up))
			select {
			case s := <-got:
				if s != sum {
					t.Errorf("upload: the bytes the node received differ from the file sent")
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("upload: the node got no conn or no end of it")
			}
			n := netstack.GROMerged(m.node) - merged
			t.Logf("upload of %d MiB: %d received packets merged", size>>20, n)
			if (n > 0) != m.gro {
				t.Errorf("%s: %d received packets merged during the upload", m.name, n)
			}
			serveNext(2*time.Minute, func(c net.Conn) {
				if _, err := c.Write(want); err != nil {
					t.Errorf("download: %v", err)
				}
			})
			inNS(fmt.Sprintf(`exec 3<>/dev/tcp/%s/2222 && cat <&3 > %q`, m.addr, down))
			if b, err := os.ReadFile(down); err != nil || sha256.Sum256(b) != sum {
				t.Errorf("download: got %d bytes (%v), not the %d sent", len(b), err, size)
			}
		})
	}
}
