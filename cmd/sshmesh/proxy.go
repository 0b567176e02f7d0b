package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// cmdProxy runs a mesh node with a SOCKS5 proxy (CONNECT only, no auth)
// on a loopback address: a browser on a machine without a kernel WireGuard
// interface reaches the check approval page, and any mesh service, as this
// node. The SOCKS5 server is our own ~150 lines: CONNECT alone is a small
// part of RFC 1928, and the Go SOCKS5 server libraries are either
// unmaintained (armon/go-socks5) or bring much we must not offer (BIND,
// UDP ASSOCIATE).
//
// Whoever uses the proxy is this node on the mesh, so only the user who
// runs it may: on Linux the kernel tells who owns the client's socket (see
// loopbackPeerUID) and every other local user is refused, root included
// unless root runs the proxy (a socket of root's may be a deputy's, such as
// a server dialing for someone else).
// SOCKS5 authentication would not do, as browsers send none. Elsewhere the
// proxy cannot tell, and starts only with --any-local-user.
func cmdProxy(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("proxy", "--wg CONF --socks5 127.0.0.1:PORT [--no-browser] [--any-local-user]", io)
	wgPath := fs.String("wg", "", "wg-quick `file` of this (client) node (required)")
	listen := fs.String("socks5", "127.0.0.1:1080", "loopback `address:port` of the SOCKS5 proxy")
	noBrowser := fs.Bool("no-browser", false, "do not open check approval pages of ssh conns through the proxy in a browser; it still prints their local link")
	anyUser := fs.Bool("any-local-user", false, "serve SOCKS5 clients of every local user, not only this user's: all of them then "+
		"reach the mesh as this node. Only on Linux can the proxy tell who connects; elsewhere it starts only with this flag")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *wgPath == "" || fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	ap, err := netip.ParseAddrPort(*listen)
	if err != nil || !ap.Addr().IsLoopback() {
		return fmt.Errorf("--socks5 %q: want a loopback address and port, such as 127.0.0.1:1080 (the proxy has no authentication)", *listen)
	}
	if !*anyUser {
		if err := checkPeerUID(ap.Addr()); err != nil {
			return fmt.Errorf("the proxy cannot tell which local user connects to it (%v), so it would lend this node's identity to "+
				"every user of this machine: with --any-local-user it starts anyway", err)
		}
	}
	logger := slog.New(slog.NewTextHandler(io.err, &slog.HandlerOptions{Level: slog.LevelWarn}))
	node, err := startClientNode(*wgPath, io.err, logger)
	if err != nil {
		return err
	}
	defer node.Close()
	others, release := holdKey(node.PublicKey(), "proxy "+filepath.Base(*wgPath))
	defer release()
	if w := sameKeyWarning(others); w != "" {
		fmt.Fprintf(io.err, "sshmesh proxy: warning: %s\n", w)
	}
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return err
	}
	defer ln.Close()
	p := &socksProxy{dial: node.Dial, logger: logger, owner: uint32(os.Getuid()), anyUser: *anyUser}
	open := openBrowser
	if *noBrowser {
		open = nil
	}
	if w := watchNotices(node, open, io.err, logger); w != nil {
		p.track = w.track
	}
	fmt.Fprintf(io.out, "sshmesh: SOCKS5 proxy on %s into the mesh as %s\n", ln.Addr(), joinAddrs(node.Addresses()))
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	err = p.serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// socksProxy is a SOCKS5 server (RFC 1928) that only knows CONNECT without
// authentication, dialing through dial. It serves only clients whose
// socket belongs to owner, unless anyUser.
type socksProxy struct {
	dial    func(ctx context.Context, network, address string) (net.Conn, error)
	track   func(net.Conn) func() // nil: no check notices
	logger  *slog.Logger
	owner   uint32 // the uid served
	anyUser bool   // serve every client, asking nobody who it is
	wg      sync.WaitGroup
}

func (p *socksProxy) serve(ln net.Listener) error {
	defer p.wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			if !p.admit(c) {
				return
			}
			if err := p.handle(c); err != nil {
				p.logger.Info("socks5 conn ended", "addr", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// admit reports whether the client of c may use the proxy, logging why not.
// A refused client's conn is closed before a byte of it is read.
func (p *socksProxy) admit(c net.Conn) bool {
	if p.anyUser {
		return true
	}
	uid, err := loopbackPeerUID(c)
	switch {
	case err != nil:
		p.logger.Warn("socks5 client refused: cannot tell which local user it is", "addr", c.RemoteAddr().String(), "err", err)
		return false
	case uid != p.owner:
		p.logger.Warn("socks5 client refused: another local user's", "addr", c.RemoteAddr().String(), "uid", uid)
		return false
	}
	return true
}

// checkPeerUID makes sure that loopbackPeerUID works here, on a conn of its
// own to an unused port of address a, before the proxy relies on it.
func checkPeerUID(a netip.Addr) error {
	if !peerUIDSupported {
		return fmt.Errorf("%w on %s", errors.ErrUnsupported, runtime.GOOS)
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(a, 0).String())
	if err != nil {
		return err
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		return err
	}
	defer s.Close()
	uid, err := loopbackPeerUID(s)
	if err == nil && uid != uint32(os.Getuid()) {
		err = fmt.Errorf("the kernel says uid %d owns a socket of uid %d", uid, os.Getuid())
	}
	return err
}

// SOCKS5 reply codes.
const (
	socksOK              = 0x00
	socksFailure         = 0x01
	socksHostUnreachable = 0x04
	socksRefused         = 0x05
	socksCmdUnsupported  = 0x07
	socksAddrUnsupported = 0x08
)

func (p *socksProxy) handle(c net.Conn) error {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	// Greeting: VER NMETHODS METHODS...
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != 5 {
		return fmt.Errorf("socks version %d, want 5", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return err
	}
	noAuth := false
	for _, m := range methods {
		noAuth = noAuth || m == 0
	}
	if !noAuth {
		c.Write([]byte{5, 0xff})
		return errors.New("client offers no method without authentication")
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return err
	}
	// Request: VER CMD RSV ATYP DST.ADDR DST.PORT
	var req [4]byte
	if _, err := io.ReadFull(r, req[:]); err != nil {
		return err
	}
	if req[0] != 5 {
		return fmt.Errorf("socks version %d in request", req[0])
	}
	var host string
	switch req[3] {
	case 1, 4:
		b := make([]byte, map[byte]int{1: 4, 4: 16}[req[3]])
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		a, _ := netip.AddrFromSlice(b)
		host = a.Unmap().String()
	case 3:
		n, err := r.ReadByte()
		if err != nil {
			return err
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		host = string(b)
	default:
		p.reply(c, socksAddrUnsupported, nil)
		return fmt.Errorf("address type %d", req[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return err
	}
	if req[1] != 1 {
		p.reply(c, socksCmdUnsupported, nil)
		return fmt.Errorf("command %d: only CONNECT (1) is offered", req[1])
	}
	target := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:]))))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	up, err := p.dial(ctx, "tcp", target)
	cancel()
	if err != nil {
		code := byte(socksHostUnreachable)
		if errors.Is(err, syscall.ECONNREFUSED) {
			code = socksRefused
		}
		p.reply(c, code, nil)
		return fmt.Errorf("connect %s: %w", target, err)
	}
	defer up.Close()
	if p.track != nil {
		defer p.track(up)()
	}
	if err := p.reply(c, socksOK, up.LocalAddr()); err != nil {
		return err
	}
	c.SetDeadline(time.Time{})
	// The client may have sent data after the request; r holds it. When
	// the mesh side has said all it will, both conns close (the deferred
	// Closes also end the copy the other way).
	go func() {
		io.Copy(up, r)
		if cw, ok := up.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	_, err = io.Copy(c, up)
	return err
}

// reply sends a SOCKS5 reply with the bound address (zero when nil).
func (p *socksProxy) reply(c net.Conn, code byte, bound net.Addr) error {
	ap := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if bound != nil {
		if a, err := netip.ParseAddrPort(bound.String()); err == nil {
			ap = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		}
	}
	b := []byte{5, code, 0}
	if ap.Addr().Is4() {
		b = append(b, 1)
	} else {
		b = append(b, 4)
	}
	b = append(b, ap.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, ap.Port())
	_, err := c.Write(b)
	return err
}
