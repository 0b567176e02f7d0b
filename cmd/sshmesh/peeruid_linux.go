package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// peerUIDSupported: Linux tells who owns the client end of a loopback TCP
// conn.
const peerUIDSupported = true

// inet_diag layout (linux/inet_diag.h).
const (
	diagReqLen    = 56 // struct inet_diag_req_v2
	diagMsgLen    = 72 // struct inet_diag_msg
	diagStateEstd = 1  // TCP_ESTABLISHED
)

// loopbackPeerUID returns the uid that owns the socket at the other end of
// c, a TCP conn accepted on a loopback address of this machine: the owner
// `ss -e` shows, from the kernel's answer to a sock_diag (INET_DIAG) query
// for that one socket by its exact address pair. The uid is in the user
// namespace of this process, as os.Getuid is.
//
// Only an established socket counts: a socket that its owner has already
// closed lingers as a FIN-WAIT or TIME-WAIT entry that the kernel reports
// as owned by root.
func loopbackPeerUID(c net.Conn) (uint32, error) {
	la, lok := c.LocalAddr().(*net.TCPAddr)
	ra, rok := c.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return 0, fmt.Errorf("not a TCP conn (%s)", c.LocalAddr().Network())
	}
	// The peer socket's own end is our remote one.
	src, dst := ra.AddrPort(), la.AddrPort()
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if !src.Addr().IsLoopback() || !dst.Addr().IsLoopback() {
		return 0, fmt.Errorf("%s → %s is not a loopback conn", src, dst)
	}
	family := byte(unix.AF_INET6)
	if src.Addr().Is4() {
		family = unix.AF_INET
	}

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	// The kernel answers while handling the request; the timeout only
	// guards against a kernel that does not.
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("sock_diag timeout: %w", err)
	}

	const seq = 1
	ne := binary.NativeEndian
	req := make([]byte, unix.NLMSG_HDRLEN+diagReqLen)
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], seq)
	r := req[unix.NLMSG_HDRLEN:]
	r[0], r[1] = family, unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 1<<diagStateEstd)
	putSockID(r[8:56], src, dst)
	ne.PutUint32(r[48:], 0xffffffff) // idiag_cookie: INET_DIAG_NOCOOKIE
	ne.PutUint32(r[52:], 0xffffffff)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag request: %w", err)
	}

	buf := make([]byte, 8192)
	var n int
	var from unix.Sockaddr
	for {
		n, from, err = unix.Recvfrom(fd, buf, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("sock_diag reply: %w", err)
	}
	if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
		return 0, errors.New("sock_diag reply not from the kernel")
	}
	for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
		l := int(ne.Uint32(b[0:]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return 0, errors.New("sock_diag reply: bad message length")
		}
		typ, msg := ne.Uint16(b[4:]), b[unix.NLMSG_HDRLEN:l]
		if ne.Uint32(b[8:]) != seq {
			return 0, errors.New("sock_diag reply: wrong sequence number")
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(msg) < 4 {
				return 0, errors.New("sock_diag reply: short error")
			}
			if errno := -int32(ne.Uint32(msg)); errno != 0 {
				if unix.Errno(errno) == unix.ENOENT {
					return 0, fmt.Errorf("no established socket %s → %s (closed already?)", src, dst)
				}
				return 0, fmt.Errorf("sock_diag: %w", unix.Errno(errno))
			}
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(msg) < diagMsgLen {
				return 0, errors.New("sock_diag reply: short message")
			}
			// The kernel looks up by the pair but may hand back
			// another state (time-wait) or, with no such conn,
			// a listener: take only the very socket asked for.
			if msg[1] != diagStateEstd {
				return 0, fmt.Errorf("socket %s → %s is in TCP state %d, not established (uid %d)", src, dst, msg[1], ne.Uint32(msg[64:]))
			}
			if gs, gd := sockIDAddrs(msg[0], msg[4:52]); gs != src || gd != dst {
				return 0, fmt.Errorf("sock_diag answered for %s → %s, not %s → %s", gs, gd, src, dst)
			}
			return ne.Uint32(msg[64:]), nil
		}
		b = b[nlmsgAlign(l):]
	}
	return 0, errors.New("sock_diag: no answer")
}

// putSockID writes the address part of a struct inet_diag_sockid (ports
// and addresses, network byte order) for src → dst into b[:36].
func putSockID(b []byte, src, dst netip.AddrPort) {
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	copy(b[4:20], src.Addr().AsSlice())
	copy(b[20:36], dst.Addr().AsSlice())
}

// sockIDAddrs reads the source and destination of a struct
// inet_diag_sockid of a socket of the given family. A dual-stack AF_INET6
// socket that connected to an IPv4 address carries it v4-mapped.
func sockIDAddrs(family byte, b []byte) (src, dst netip.AddrPort) {
	addr := func(b []byte) netip.Addr {
		if family == unix.AF_INET {
			return netip.AddrFrom4([4]byte(b[:4]))
		}
		return netip.AddrFrom16([16]byte(b[:16])).Unmap()
	}
	return netip.AddrPortFrom(addr(b[4:20]), binary.BigEndian.Uint16(b[0:])),
		netip.AddrPortFrom(addr(b[20:36]), binary.BigEndian.Uint16(b[2:]))
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
