package sshmesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// TCP port forwarding: direct-tcpip (ssh -L, -D) and tcpip-forward (ssh -R),
// RFC 4254 section 7.

// forwardDialTimeout bounds name resolution plus the dial of a direct-tcpip
// channel, like a TCP connect timeout.
const forwardDialTimeout = 15 * time.Second

// directTCPIP serves a direct-tcpip channel: the target is resolved once,
// each resolved address checked, and only checked addresses dialed from the
// server's host network.
func (c *serverConn) directTCPIP(ctx context.Context, nch ssh.NewChannel) {
	var p struct {
		Host       string
		Port       uint32
		OriginHost string
		OriginPort uint32
	}
	if err := ssh.Unmarshal(nch.ExtraData(), &p); err != nil || p.Port == 0 || p.Port > 65535 || p.Host == "" {
		nch.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	target := net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port)))
	dctx, cancel := context.WithTimeout(ctx, forwardDialTimeout)
	defer cancel()
	addrs, err := resolve(dctx, p.Host)
	if err != nil {
		c.srv.logger().Info("forwarding failed", c.forwardAttrs(LocalPort, target, "err", err)...)
		nch.Reject(ssh.ConnectionFailed, "cannot resolve "+p.Host)
		return
	}
	allowed, err := c.allowResolved(ctx, LocalPort, p.Host, addrs, uint16(p.Port))
	if err != nil {
		nch.Reject(ssh.Prohibited, fmt.Sprintf("port forwarding to %s: %v", target, err))
		return
	}
	var conn net.Conn
	var d net.Dialer
	// The socket is the local user's, as sshd's (its session process
	// dials): see asLocalUser.
	err = c.asLocalUser(func() error {
		var err error
		for _, a := range allowed {
			if conn, err = d.DialContext(dctx, "tcp", a.String()); err == nil {
				break
			}
		}
		return err
	})
	if err != nil {
		c.srv.logger().Info("forwarding failed", c.forwardAttrs(LocalPort, target, "err", err)...)
		nch.Reject(ssh.ConnectionFailed, "connect to "+target+" failed")
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		conn.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	log := c.srv.logger()
	log.Info("forward start", c.forwardAttrs(LocalPort, target, "dialed", conn.RemoteAddr().String())...)
	up, down := c.pipe(ctx, ch, conn)
	log.Info("forward end", c.forwardAttrs(LocalPort, target, "dialed", conn.RemoteAddr().String(), "bytes_up", up, "bytes_down", down)...)
}

// resolve returns host's addresses: host itself when it is an address
// literal, else one lookup's answer. The caller checks and dials exactly
// these, so a name cannot change its answer between check and dial.
func resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return nil, errors.New("zoned addresses are not supported")
		}
		return []netip.Addr{a.Unmap()}, nil
	}
	as, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for i := range as {
		as[i] = as[i].Unmap()
	}
	return as, nil
}

// tcpipForwardMsg is the payload of tcpip-forward and cancel-tcpip-forward.
type tcpipForwardMsg struct {
	Addr string
	Port uint32
}

// remoteKey names a remote listener the way the client does, so cancel
// finds it: the address as the client sent it and the bound port (the
// allocated one when the client asked for port 0, as OpenSSH cancels it).
func remoteKey(addr string, port uint32) string {
	return "tcp:" + net.JoinHostPort(addr, strconv.Itoa(int(port)))
}

// bindAddrs maps a tcpip-forward address to the addresses to check and
// bind: "" and "localhost" are loopback (as sshd with GatewayPorts no);
// "*", "0.0.0.0" and "::" are every address; names resolve once.
func bindAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	switch strings.ToLower(host) {
	case "", "localhost":
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	case "*":
		return []netip.Addr{netip.IPv4Unspecified()}, nil
	}
	return resolve(ctx, host)
}

// tcpipForward serves tcpip-forward (ssh -R): it listens where the rule
// allows and opens a forwarded-tcpip channel to the client per conn.
func (c *serverConn) tcpipForward(ctx context.Context, payload []byte) (bool, []byte) {
	var m tcpipForwardMsg
	if ssh.Unmarshal(payload, &m) != nil || m.Port > 65535 {
		return false, nil
	}
	target := net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))
	if m.Port != 0 && m.Port < 1024 && c.localUID != "0" {
		c.forwardRefused(RemotePort, target, "ports below 1024 need a root session")
		return false, nil
	}
	rctx, cancel := context.WithTimeout(ctx, forwardDialTimeout)
	defer cancel()
	addrs, err := bindAddrs(rctx, m.Addr)
	if err != nil {
		c.srv.logger().Info("forwarding failed", c.forwardAttrs(RemotePort, target, "err", err)...)
		return false, nil
	}
	st := c.forwards(ctx)
	if st == nil {
		return false, nil
	}
	allowed, err := c.allowResolved(ctx, RemotePort, m.Addr, addrs, uint16(m.Port))
	if err != nil {
		return false, nil
	}
	// Only the first allowed address is bound: "localhost" is 127.0.0.1
	// alone (sshd would add ::1).
	var ln net.Listener
	err = c.asLocalUser(func() error {
		var err error
		ln, err = net.Listen("tcp", allowed[0].String())
		return err
	})
	if err != nil {
		c.srv.logger().Info("forwarding failed", c.forwardAttrs(RemotePort, target, "err", err)...)
		return false, nil
	}
	port := uint32(ln.Addr().(*net.TCPAddr).Port)
	if !st.addListener(remoteKey(m.Addr, port), ln) {
		ln.Close()
		return false, nil
	}
	c.srv.logger().Info("remote forward listening", c.forwardAttrs(RemotePort, target, "listen", ln.Addr().String())...)
	go func() {
		defer st.wg.Done()
		c.serveRemote(st, ln, m.Addr, port)
	}()
	if m.Port == 0 {
		return true, ssh.Marshal(struct{ Port uint32 }{port})
	}
	return true, nil
}

// serveRemote accepts on ln until it is closed, forwarding each conn to the
// client as a forwarded-tcpip channel for addr:port (as the client asked).
func (c *serverConn) serveRemote(st *forwardState, ln net.Listener, addr string, port uint32) {
	defer ln.Close()
	for {
		conn, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && st.ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		st.wg.Add(1)
		go func() {
			defer st.wg.Done()
			ra, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
			payload := ssh.Marshal(struct {
				Addr       string
				Port       uint32
				OriginAddr string
				OriginPort uint32
			}{addr, port, ra.Addr().Unmap().String(), uint32(ra.Port())})
			c.openToClient(st, "forwarded-tcpip", payload, conn, remoteKey(addr, port))
		}()
	}
}

// openToClient opens a channel of type kind to the client and pipes conn
// through it.
func (c *serverConn) openToClient(st *forwardState, kind string, payload []byte, conn net.Conn, target string) {
	sc := c.sshConn()
	if sc == nil {
		conn.Close()
		return
	}
	ch, reqs, err := sc.OpenChannel(kind, payload)
	if err != nil {
		c.srv.logger().Info("client refused forwarded channel", "peer", c.peer.Key.String(), "kind", kind, "target", target, "err", err)
		conn.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	c.pipe(st.ctx, ch, conn)
}

// cancelTCPIPForward serves cancel-tcpip-forward.
func (c *serverConn) cancelTCPIPForward(payload []byte) bool {
	var m tcpipForwardMsg
	if ssh.Unmarshal(payload, &m) != nil {
		return false
	}
	st := c.currentForwards()
	return st != nil && st.removeListener(remoteKey(m.Addr, m.Port))
}
