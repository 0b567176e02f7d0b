package checkpage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/checkpage"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// These tests run the Server and the page over loopback TCP, with a fixed
// source address → key table standing in for the mesh (the Listener
// resolves peers the same way); TestNoticeOverMesh uses real mesh nodes.

// Loopback addresses of the test's nodes.
var (
	serverAddr = netip.MustParseAddr("127.0.0.1")
	aliceLap   = netip.MustParseAddr("127.0.0.2") // the caller, owner alice
	alicePhone = netip.MustParseAddr("127.0.0.3") // alice's browser
	bobLap     = netip.MustParseAddr("127.0.0.4") // another owner's browser
	tagged     = netip.MustParseAddr("127.0.0.5") // a tagged node, no owner
)

// world is a server with a Checker, its page, and the nodes around it.
type world struct {
	t       testing.TB
	srv     *sshmesh.Server
	checker *checkpage.Checker
	sshAddr string
	keys    map[netip.Addr]meshkey.Public
	ids     map[meshkey.Public]policy.Identity
	clock   *sshmeshtest.Clock
	period  time.Duration
	accept  bool // the policy accepts instead of checking (benchmarks)
	// checkRule is the rule the policy's check decisions name: its Rule
	// and RuleID (nil: "ssh[0]" and no RuleID).
	checkRule atomic.Pointer[[2]string]
	// passkey makes check decisions ask for a passkey (the policy's
	// default); else they ask for checkProof "mesh".
	passkey atomic.Bool
	// oidc makes them ask for a sign-in at the identity provider.
	oidc atomic.Bool
}

// setCheckRule makes the policy's check decisions come from the rule
// named name, with RuleID id, as a changed policy would.
func (w *world) setCheckRule(name, id string) { w.checkRule.Store(&[2]string{name, id}) }

func newKey(t testing.TB) meshkey.Public {
	t.Helper()
	k, err := meshkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

// addrTable resolves loopback source addresses to keys, as a node's
// allowed-IPs table does, and knows the server's own key.
type addrTable map[netip.Addr]meshkey.Public

func (a addrTable) PeerForAddr(ip netip.Addr) (meshkey.Public, bool) {
	k, ok := a[ip]
	return k, ok
}

func (a addrTable) PublicKey() meshkey.Public { return a[serverAddr] }

// newWorld starts a Server whose policy checks every login (local user =
// login name, rule "ssh[0]", checkPeriod 1h) with checker configured by
// setup, and serves its page.
func newWorld(t testing.TB, setup func(*checkpage.Checker)) *world {
	t.Helper()
	w := &world{t: t, keys: map[netip.Addr]meshkey.Public{}, ids: map[meshkey.Public]policy.Identity{},
		clock: sshmeshtest.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), period: time.Hour}
	for addr, id := range map[netip.Addr]policy.Identity{
		serverAddr: {Node: "srv", Tags: []string{"tag:server"}},
		aliceLap:   {Node: "alice-laptop", Owner: "alice@example.com"},
		alicePhone: {Node: "alice-phone", Owner: "alice@example.com"},
		bobLap:     {Node: "bob-laptop", Owner: "bob@example.com"},
		tagged:     {Node: "ci", Tags: []string{"tag:ci"}},
	} {
		id.Key = newKey(t)
		w.keys[addr] = id.Key
		w.ids[id.Key] = id
	}
	identify := func(k meshkey.Public) (policy.Identity, bool) {
		id, ok := w.ids[k]
		return id, ok
	}
	w.start(t, identify, setup)
	return w
}

func (w *world) start(t testing.TB, identify func(meshkey.Public) (policy.Identity, bool), setup func(*checkpage.Checker)) {
	t.Helper()
	table := addrTable(w.keys)
	pageLn, err := net.Listen("tcp", serverAddr.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	w.checker = &checkpage.Checker{
		Identify: identify,
		Port:     uint16(pageLn.Addr().(*net.TCPAddr).Port),
		Now:      w.clock.Now,
	}
	if setup != nil {
		setup(w.checker)
	}
	pageErr := make(chan error, 1)
	go func() { pageErr <- w.checker.Serve(sshmesh.NewListener(pageLn, table, nil)) }()

	hostKey, err := sshmesh.LoadOrCreateHostKey(t.TempDir() + "/hostkey")
	if err != nil {
		t.Fatal(err)
	}
	w.srv = &sshmesh.Server{
		Policy: policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
			if w.accept {
				return policy.Decision{Action: policy.Accept, LocalUser: r.User, Rule: "ssh[0]", Caller: w.ids[r.Key]}, nil
			}
			rule := [2]string{"ssh[0]", ""}
			if p := w.checkRule.Load(); p != nil {
				rule = *p
			}
			proof := policy.CheckProofMesh
			if w.passkey.Load() {
				proof = ""
			}
			if w.oidc.Load() {
				proof = policy.CheckProofOIDC
			}
			return policy.Decision{Action: policy.Check, LocalUser: r.User, Rule: rule[0], RuleID: rule[1], RulePos: "policy.hujson:7",
				Caller: w.ids[r.Key], CheckPeriod: w.period, CheckProof: proof}, nil
		}),
		HostKeys:           []ssh.Signer{hostKey},
		Checker:            w.checker,
		MaxStartupsPerPeer: 50,
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
			io.WriteString(s, "hello "+s.LocalUser())
			s.Exit(0)
		}),
	}
	ln, err := net.Listen("tcp", serverAddr.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	w.sshAddr = ln.Addr().String()
	srv := w.srv
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(sshmesh.NewListener(ln, table, nil)) }()
	checker := w.checker
	t.Cleanup(func() {
		srv.Close()
		checker.Close()
		if err := <-srvErr; !errors.Is(err, sshmesh.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		if err := <-pageErr; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("page Serve: %v", err)
		}
	})
}

// restart serves a fresh Server and Checker (same keys, clock and setup)
// after closing the old ones, as a restarted process would.
func (w *world) restart(setup func(*checkpage.Checker)) {
	w.t.Helper()
	w.srv.Close()
	w.checker.Close()
	identify := w.checker.Identify
	w.start(w.t, identify, setup)
}

// login is one SSH login attempt in the background.
type login struct {
	mu      sync.Mutex
	banners []string
	gotURL  chan string
	done    chan struct{}
	err     error
	out     string
}

var urlRE = regexp.MustCompile(`Approve this login at (http://\S+) \(waiting up to [0-9hms]+\)`)

// login logs in from the node at from as user and runs a command.
func (w *world) login(from netip.Addr, user string) *login {
	l := &login{gotURL: make(chan string, 1), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}, Timeout: 10 * time.Second}
		nc, err := d.Dial("tcp", w.sshAddr)
		if err != nil {
			l.err = err
			return
		}
		defer nc.Close()
		c, chans, reqs, err := ssh.NewClientConn(nc, w.sshAddr, &ssh.ClientConfig{
			User:            user,
			HostKeyCallback: ssh.FixedHostKey(w.srv.HostKeys[0].PublicKey()),
			BannerCallback: func(msg string) error {
				l.mu.Lock()
				l.banners = append(l.banners, msg)
				l.mu.Unlock()
				if m := urlRE.FindStringSubmatch(msg); m != nil {
					select {
					case l.gotURL <- m[1]:
					default:
					}
				}
				return nil
			},
		})
		if err != nil {
			l.err = err
			return
		}
		cl := ssh.NewClient(c, chans, reqs)
		defer cl.Close()
		s, err := cl.NewSession()
		if err != nil {
			l.err = err
			return
		}
		out, err := s.Output("x")
		l.out, l.err = string(out), err
	}()
	return l
}

// url waits for the login's check URL.
func (l *login) url(t *testing.T) string {
	t.Helper()
	select {
	case u := <-l.gotURL:
		return u
	case <-l.done:
		t.Fatalf("login ended without a check URL: err %v, banners %q", l.err, l.allBanners())
	case <-time.After(10 * time.Second):
		t.Fatal("no check URL within 10 s")
	}
	return ""
}

// wait waits for the login to end and returns its error.
func (l *login) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-l.done:
		return l.err
	case <-time.After(15 * time.Second):
		t.Fatal("login did not end within 15 s")
	}
	return nil
}

// waiting reports whether the login is still waiting after a short while.
func (l *login) waiting() bool {
	select {
	case <-l.done:
		return false
	case <-time.After(200 * time.Millisecond):
		return true
	}
}

func (l *login) allBanners() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.banners, "")
}

// browser is an HTTP client whose conns come from the node at from.
func browser(from netip.Addr) *http.Client {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}, Timeout: 10 * time.Second}
	return &http.Client{
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
		Timeout:   10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// page GETs u as from and returns the status, the body and the form token.
func pageTB(t testing.TB, from netip.Addr, u string) (int, string, string) {
	t.Helper()
	resp, err := browser(from).Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	csrf := ""
	if m := csrfRE.FindSubmatch(b); m != nil {
		csrf = string(m[1])
	}
	return resp.StatusCode, string(b), csrf
}

// decide POSTs decision with csrf (omitted when "") to u as from.
func decideTB(t testing.TB, from netip.Addr, u, decision, csrf string) (int, string) {
	t.Helper()
	form := url.Values{"decision": {decision}}
	if csrf != "" {
		form.Set("csrf", csrf)
	}
	resp, err := browser(from).PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// approve opens u as alice's phone and approves it.
func approve(t *testing.T, u string) { approveTB(t, u) }

func page(t *testing.T, from netip.Addr, u string) (int, string, string) { return pageTB(t, from, u) }

func decide(t *testing.T, from netip.Addr, u, decision, csrf string) (int, string) {
	return decideTB(t, from, u, decision, csrf)
}

func (w *world) String() string { return fmt.Sprintf("world(%s)", w.sshAddr) }

// httpVia is an HTTP client whose conns leave from a mesh node.
func httpVia(n *sshmeshtest.Node) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: n.Dial, DisableKeepAlives: true}, Timeout: 20 * time.Second}
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
