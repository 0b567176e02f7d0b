package checkpage_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/checkpage"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

func TestNoticeValidate(t *testing.T) {
	srv := netip.MustParseAddr("100.64.0.1")
	tok := "OHJC-FpjaLofxm8bbY6BVQ"
	for _, tc := range []struct {
		name string
		n    checkpage.Notice
		ok   bool
	}{
		{"page", checkpage.Notice{ConnPort: 4000, URL: "http://100.64.0.1/check/" + tok}, true},
		{"page with port", checkpage.Notice{ConnPort: 4000, URL: "http://100.64.0.1:8022/check/" + tok}, true},
		{"another conn", checkpage.Notice{ConnPort: 4001, URL: "http://100.64.0.1/check/" + tok}, false},
		{"another host", checkpage.Notice{ConnPort: 4000, URL: "http://100.64.0.2/check/" + tok}, false},
		{"a name", checkpage.Notice{ConnPort: 4000, URL: "http://evil.example/check/" + tok}, false},
		{"https", checkpage.Notice{ConnPort: 4000, URL: "https://100.64.0.1/check/" + tok}, false},
		{"file", checkpage.Notice{ConnPort: 4000, URL: "file:///etc/passwd"}, false},
		{"user info", checkpage.Notice{ConnPort: 4000, URL: "http://x@100.64.0.1/check/" + tok}, false},
		{"query", checkpage.Notice{ConnPort: 4000, URL: "http://100.64.0.1/check/" + tok + "?a=b"}, false},
		{"other path", checkpage.Notice{ConnPort: 4000, URL: "http://100.64.0.1/admin"}, false},
		{"short token", checkpage.Notice{ConnPort: 4000, URL: "http://100.64.0.1/check/abc"}, false},
		{"option-like", checkpage.Notice{ConnPort: 4000, URL: "--help"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.n.Validate(srv, 4000)
			if (err == nil) != tc.ok {
				t.Errorf("Validate(%+v) = %v, want ok=%v", tc.n, err, tc.ok)
			}
		})
	}
	if _, err := checkpage.ReadNotice(strings.NewReader(strings.Repeat("x", 5000))); err == nil {
		t.Error("ReadNotice took an oversized notice")
	}
}

// TestNoticeOverMesh: real mesh nodes; the caller's node gets one notice
// per pending check, naming the conn that started it, with the banner's
// URL on the server's mesh address; joining conns get no notice.
func TestNoticeOverMesh(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 3)
	server, laptop, phone := m.Nodes[0], m.Nodes[1], m.Nodes[2]
	ids := map[meshkey.Public]policy.Identity{
		server.Key.Public(): {Key: server.Key.Public(), Node: "srv"},
		laptop.Key.Public(): {Key: laptop.Key.Public(), Node: "laptop", Owner: "alice@example.com"},
		phone.Key.Public():  {Key: phone.Key.Public(), Node: "phone", Owner: "alice@example.com"},
	}
	identify := func(k meshkey.Public) (policy.Identity, bool) { id, ok := ids[k]; return id, ok }
	checker := &checkpage.Checker{Identify: identify, Dial: server.Dial}
	pageLn, err := server.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	go checker.Serve(pageLn)
	t.Cleanup(func() { checker.Close() })
	srv := &sshmesh.Server{
		Policy: policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
			return policy.Decision{Action: policy.Check, LocalUser: "deploy", Rule: "ssh[0]", Caller: ids[r.Key], CheckPeriod: time.Hour, CheckProof: policy.CheckProofMesh}, nil
		}),
		Checker: checker,
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) { s.Exit(0) }),
	}
	sshmeshtest.Serve(t, server, srv)

	notices := make(chan checkpage.Notice, 10)
	nl, err := laptop.Listen("tcp", ":41022")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nl.Close() })
	go func() {
		l := nl
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if p, _ := sshmesh.PeerOf(c); p.Key != server.Key.Public() {
				t.Errorf("notice from %s, want the server", p.Key)
			}
			n, err := checkpage.ReadNotice(c)
			c.Close()
			if err != nil {
				t.Error(err)
				continue
			}
			notices <- n
		}
	}()

	type result struct {
		port   uint16
		banner string
		err    error
	}
	dial := func(res chan<- result) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		nc, err := laptop.Dial(ctx, "tcp", netip.AddrPortFrom(server.Addr, 22).String())
		if err != nil {
			res <- result{err: err}
			return
		}
		defer nc.Close()
		port := uint16(nc.LocalAddr().(*net.TCPAddr).Port)
		sent := false
		c, _, _, err := ssh.NewClientConn(nc, "srv", &ssh.ClientConfig{
			User: "deploy", HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			BannerCallback: func(msg string) error {
				if !sent {
					sent = true
					res <- result{port: port, banner: msg}
				}
				return nil
			},
		})
		if err == nil {
			c.Close()
		}
		res <- result{port: port, err: err}
	}
	first := make(chan result, 2)
	go dial(first)
	r1 := <-first
	if r1.err != nil {
		t.Fatal(r1.err)
	}
	var n checkpage.Notice
	select {
	case n = <-notices:
	case <-time.After(10 * time.Second):
		t.Fatal("no notice within 10 s")
	}
	if n.ConnPort != r1.port || !strings.Contains(r1.banner, n.URL) || !strings.HasPrefix(n.URL, "http://100.64.0.1/check/") {
		t.Errorf("notice %+v; conn port %d, banner %q", n, r1.port, r1.banner)
	}
	if err := n.Validate(server.Addr, r1.port); err != nil {
		t.Error(err)
	}
	// A second conn joins the pending check: same URL, no notice.
	second := make(chan result, 2)
	go dial(second)
	r2 := <-second
	if r2.err != nil || !strings.Contains(r2.banner, n.URL) {
		t.Fatalf("joining conn: %v, banner %q", r2.err, r2.banner)
	}
	select {
	case n2 := <-notices:
		t.Errorf("a joining conn got a notice: %+v", n2)
	case <-time.After(500 * time.Millisecond):
	}
	// Approve from the phone; both conns get in.
	hc := httpVia(phone)
	resp, err := hc.Get(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(resp)
	csrf := csrfRE.FindStringSubmatch(body)
	if resp.StatusCode != 200 || csrf == nil {
		t.Fatalf("GET as phone: %d\n%s", resp.StatusCode, body)
	}
	resp, err = hc.PostForm(n.URL, map[string][]string{"csrf": {csrf[1]}, "decision": {"approve"}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("approve: %v %v", err, resp)
	}
	for _, ch := range []chan result{first, second} {
		if r := <-ch; r.err != nil {
			t.Errorf("login after approval: %v", r.err)
		}
	}
}
