package sshmesh_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// The pre-auth flood: one peer (that the policy refuses) opens
// floodConns conns to the SSH port, writes floodBytes into each and never
// logs in. That fills its startup slots and its queue; the rest are closed.
const (
	floodConns = 1100
	floodBytes = 128 << 10
	idleConns  = 32                     // the default MaxStartupsPerPeer
	floodEnv   = "SSHMESH_TEST_FLOODER" // the flooder's config, for TestPreAuthFlooder
)

// flooderConfig is what the flooder process needs to be a node of the
// test's mesh: the third node's key, port and address, and the server.
type flooderConfig struct {
	Key       string // base64 private key
	Addr      netip.Addr
	Server    meshkey.Public
	ServerIP  netip.Addr
	ServerEnd netip.AddrPort
}

// TestPreAuthFloodNoLeak: the flood costs the server little memory (its
// stack buffers a small window per queued conn, not a full one), and
// another peer logs in during it. The flooder runs in a process of its
// own so that the RSS measured is the server's (and the legitimate
// client's): in this process, the flooder's own send buffers would hold
// what the server refuses to take.
func TestPreAuthFloodNoLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("long: 1,100 conns from a second process")
	}
	m := sshmeshtest.NewMesh(t, 3)
	server, client, flooder := m.Nodes[0], m.Nodes[1], m.Nodes[2]
	srv := &sshmesh.Server{
		Policy: policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
			if r.Key != client.Key.Public() {
				return policy.Decision{Message: "only the client node"}, nil
			}
			return policy.Decision{Action: policy.Accept, LocalUser: r.User}, nil
		}),
		LoginGraceTime: time.Minute,
		Handler:        sshmesh.HandlerFunc(func(s *sshmesh.Session) { io.WriteString(s, "ok") }),
	}
	sshmeshtest.Serve(t, server, srv)
	// A first login, so that what the server needs for one is counted in
	// the baseline, not in the flood.
	login := func() time.Duration {
		start := time.Now()
		c, err := sshmeshtest.Dial(t, client, server, srv, "ann")
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if out, err := sess.Output("x"); err != nil || string(out) != "ok" {
			t.Fatalf("session: %q %v", out, err)
		}
		c.Close()
		return time.Since(start)
	}
	login()

	// The flooder process takes over the third node's key. Its UDP port is
	// the one the kernel gives it (the server learns it from the flooder's
	// handshake, as WireGuard peers roam): the closed node's port could be
	// another test's by the time the process binds it.
	cfg := flooderConfig{
		Key: flooder.Key.Base64(), Addr: flooder.Addr,
		Server: server.Key.Public(), ServerIP: server.Addr,
		ServerEnd: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), server.Config.ListenPort),
	}
	flooder.Node.Close()
	js, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^TestPreAuthFlooder$", "-test.v")
	cmd.Env = append(os.Environ(), floodEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe() // the flooder ends when it closes
	stdout, _ := cmd.StdoutPipe()

	debug.FreeOSMemory()
	rss0 := rssKiB(t)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); len(line) > 6 && line[:6] == "FLOOD " {
				ready <- line[6:]
			}
		}
		close(ready)
	}()
	select {
	case line, ok := <-ready:
		if !ok {
			t.Fatal("the flooder ended before it flooded")
		}
		t.Logf("flooder: %s", line)
	case <-time.After(3 * time.Minute):
		t.Fatal("the flooder did not finish its writes in 3 minutes")
	}
	// The writes have returned; wait until the server has taken what it
	// takes (RSS stops growing), within generous bounds.
	peak := rssKiB(t)
	for stable, deadline := 0, time.Now().Add(time.Minute); stable < 4 && time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		r := rssKiB(t)
		if r > peak+1<<10 {
			stable = 0
		} else {
			stable++
		}
		peak = max(peak, r)
	}
	took := login()
	rss1 := max(peak, rssKiB(t))
	t.Logf("RSS %d MiB before the flood, %d MiB during it (+%d MiB); a login of another peer during it took %v",
		rss0>>10, rss1>>10, (rss1-rss0)>>10, took.Round(time.Millisecond))
	// Under the race detector RSS holds its shadow memory; .ci/run runs
	// the NoLeak tests once without -race for the bound.
	if !raceEnabled && rss1-rss0 > 64<<10 {
		t.Errorf("RSS grew by %d MiB during a pre-auth flood of %d conns with %d KiB each; want at most 64",
			(rss1-rss0)>>10, floodConns, floodBytes>>10)
	}
}

// TestPreAuthFlooder is the flooder of TestPreAuthFloodNoLeak, run in a
// process of its own; it does nothing in a normal run.
func TestPreAuthFlooder(t *testing.T) {
	js := os.Getenv(floodEnv)
	if js == "" {
		t.Skip("the flooder of TestPreAuthFloodNoLeak (runs in its own process)")
	}
	var cfg flooderConfig
	if err := json.Unmarshal([]byte(js), &cfg); err != nil {
		t.Fatal(err)
	}
	k, err := meshkey.ParsePrivate(cfg.Key)
	if err != nil {
		t.Fatal(err)
	}
	n, err := netstack.New(netstack.Config{
		PrivateKey: k, Addresses: []netip.Prefix{netip.PrefixFrom(cfg.Addr, 32)},
		BindAddress: netip.MustParseAddr("127.0.0.1"),
		Peers:       []netstack.Peer{{PublicKey: cfg.Server, AllowedIPs: []netip.Prefix{netip.PrefixFrom(cfg.ServerIP, 32)}, Endpoint: cfg.ServerEnd}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addr := netip.AddrPortFrom(cfg.ServerIP, 22).String()
	data := make([]byte, floodBytes)
	var (
		mu          sync.Mutex
		dialed, out int
		wg          sync.WaitGroup
		sem         = make(chan struct{}, 64)
	)
	// First conns that stay silent, holding the peer's startup slots
	// (MaxStartupsPerPeer, 32) until the login grace time; then conns
	// that wait in its queue, each written to.
	for i := range floodConns {
		if i == idleConns {
			wg.Wait()
			time.Sleep(time.Second) // the server has started the idle ones
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := n.Dial(ctx, "tcp", addr)
			if err != nil {
				return
			}
			mu.Lock()
			dialed++
			mu.Unlock()
			// Not closed: the conns stay open until the process ends.
			if i < idleConns {
				return
			}
			c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if k, _ := c.Write(data); k > 0 {
				mu.Lock()
				out += k
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("FLOOD %d conns dialed, %d MiB written\n", dialed, out>>20)
	io.Copy(io.Discard, os.Stdin) // until the test is done
}
