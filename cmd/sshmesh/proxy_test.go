package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/checkpage"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// socksDial speaks the client side of a SOCKS5 CONNECT to target through
// the proxy at proxy, returning the conn and the reply code.
func socksDial(t *testing.T, proxy string, cmd byte, target netip.AddrPort) (net.Conn, byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte{5, 1, 0})
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0} {
		t.Fatalf("method reply %v, %v", m, err)
	}
	req := []byte{5, cmd, 0, 1}
	req = append(req, target.Addr().AsSlice()...)
	req = binary.BigEndian.AppendUint16(req, target.Port())
	c.Write(req)
	var rep [10]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		t.Fatalf("reply: %v", err)
	}
	return c, rep[1]
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
	p := &socksProxy{dial: client.Dial, logger: slog.New(slog.DiscardHandler)}
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
	var said bytes.Buffer
	w := watchNotices(client.Node, func(u string) error {
		mu.Lock()
		defer mu.Unlock()
		opened = append(opened, u)
		return nil
	}, &lockedWriter{w: &said}, slog.New(slog.DiscardHandler))
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
	untrack()
	send(server, checkpage.Notice{ConnPort: port, URL: "http://100.64.0.1/check/AAAAAAAAAAAAAAAAAAAAAA"}) // conn over
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(opened) != 1 || opened[0] != good {
		t.Errorf("opened %q, want only %q", opened, good)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
