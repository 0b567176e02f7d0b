package forward

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

// DirectTCPIP serves a direct-tcpip channel (ssh -L, -D): the target is
// resolved once, each resolved address checked, and only checked addresses
// dialed from the server's host network.
func DirectTCPIP(ctx context.Context, c Conn, nch ssh.NewChannel) {
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
		logger(c, LocalPort, target).Info("forwarding failed", "err", err)
		nch.Reject(ssh.ConnectionFailed, "cannot resolve "+p.Host)
		return
	}
	allowed, err := allowResolved(ctx, c, LocalPort, p.Host, addrs, uint16(p.Port))
	if err != nil {
		nch.Reject(ssh.Prohibited, fmt.Sprintf("port forwarding to %s: %v", target, err))
		return
	}
	var conn net.Conn
	var d net.Dialer
	// The socket is the local user's, as sshd's (its session process
	// dials): see asLocalUser.
	err = asLocalUser(c, func() error {
		var err error
		for _, a := range allowed {
			if conn, err = d.DialContext(dctx, "tcp", a.String()); err == nil {
				break
			}
		}
		return err
	})
	if err != nil {
		logger(c, LocalPort, target).Info("forwarding failed", "err", err)
		nch.Reject(ssh.ConnectionFailed, "connect to "+target+" failed")
		return
	}
	ch, ok := accept(nch, conn)
	if !ok {
		return
	}
	log := logger(c, LocalPort, target).With("dialed", conn.RemoteAddr().String())
	log.Info("forward start")
	up, down := pipe(ctx, c, ch, conn)
	log.Info("forward end", "bytes_up", up, "bytes_down", down)
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

// TCPIPForward serves tcpip-forward (ssh -R): it listens where the rule
// allows and opens a forwarded-tcpip channel to the client per conn. Ports
// below 1024 need a root session, as in sshd.
func TCPIPForward(ctx context.Context, c Conn, req *ssh.Request) (bool, []byte) {
	var m tcpipForwardMsg
	if ssh.Unmarshal(req.Payload, &m) != nil || m.Port > 65535 {
		return false, nil
	}
	target := net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))
	if m.Port != 0 && m.Port < 1024 && !rootSession(c) {
		refused(c, RemotePort, target, "ports below 1024 need a root session")
		return false, nil
	}
	rctx, cancel := context.WithTimeout(ctx, forwardDialTimeout)
	defer cancel()
	addrs, err := bindAddrs(rctx, m.Addr)
	if err != nil {
		logger(c, RemotePort, target).Info("forwarding failed", "err", err)
		return false, nil
	}
	st := c.ForwardState().open(ctx)
	if st == nil {
		return false, nil
	}
	allowed, err := allowResolved(ctx, c, RemotePort, m.Addr, addrs, uint16(m.Port))
	if err != nil {
		return false, nil
	}
	// Only the first allowed address is bound: "localhost" is 127.0.0.1
	// alone (sshd would add ::1).
	var ln net.Listener
	err = asLocalUser(c, func() error {
		var err error
		ln, err = net.Listen("tcp", allowed[0].String())
		return err
	})
	if err != nil {
		logger(c, RemotePort, target).Info("forwarding failed", "err", err)
		return false, nil
	}
	port := uint32(ln.Addr().(*net.TCPAddr).Port)
	if !st.addListener(remoteKey(m.Addr, port), ln) {
		ln.Close()
		return false, nil
	}
	logger(c, RemotePort, target).Info("remote forward listening", "listen", ln.Addr().String())
	go func() {
		defer st.wg.Done()
		serveRemote(c, st, ln, m.Addr, port)
	}()
	if m.Port == 0 {
		return true, ssh.Marshal(struct{ Port uint32 }{port})
	}
	return true, nil
}

// serveRemote accepts on ln until it is closed, forwarding each conn to the
// client as a forwarded-tcpip channel for addr:port (as the client asked).
func serveRemote(c Conn, st *State, ln net.Listener, addr string, port uint32) {
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
			openToClient(c, st, "forwarded-tcpip", payload, conn, remoteKey(addr, port))
		}()
	}
}

// CancelTCPIPForward serves cancel-tcpip-forward.
func CancelTCPIPForward(ctx context.Context, c Conn, req *ssh.Request) (bool, []byte) {
	var m tcpipForwardMsg
	if ssh.Unmarshal(req.Payload, &m) != nil {
		return false, nil
	}
	return c.ForwardState().removeListener(remoteKey(m.Addr, m.Port)), nil
}

// rootSession reports whether the conn's local account is root.
func rootSession(c Conn) bool {
	u, err := c.LocalAccount()
	return err == nil && u.Uid == "0"
}
