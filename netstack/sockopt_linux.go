package netstack

import (
	"encoding/binary"
	"errors"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setSocketBuffers raises the socket's buffers up to net.core.[rw]mem_max,
// and beyond it with CAP_NET_ADMIN. Failure only costs speed.
func setSocketBuffers(udp *net.UDPConn) {
	rc, err := udp.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		for _, opt := range [][2]int{
			{unix.SO_RCVBUF, unix.SO_RCVBUFFORCE},
			{unix.SO_SNDBUF, unix.SO_SNDBUFFORCE},
		} {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[0], socketBufferSize)
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[1], socketBufferSize)
		}
	})
}

// udpOffload turns on UDP GRO for the socket and reports which of UDP GSO
// (sending many datagrams as one, UDP_SEGMENT) and UDP GRO (receiving
// coalesced datagrams, UDP_GRO) the kernel supports for it.
func udpOffload(udp *net.UDPConn) (tx, rx bool) {
	rc, err := udp.SyscallConn()
	if err != nil {
		return false, false
	}
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		tx = err == nil
		rx = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})
	return tx, rx
}

// gsoControlSize is the room a message's control data needs for one
// UDP_SEGMENT or UDP_GRO message.
var gsoControlSize = unix.CmsgSpace(4)

// putGSOSize writes a UDP_SEGMENT control message with the segment size
// into oob and returns its length.
func putGSOSize(oob []byte, size uint16) int {
	n := unix.CmsgSpace(2)
	if len(oob) < n {
		return 0
	}
	clear(oob[:n])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], size)
	return n
}

// gsoSizeOf returns the segment size of a coalesced datagram from its
// control data (UDP_GRO), or 0 for a plain one.
func gsoSizeOf(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO {
			switch {
			case len(data) >= 4:
				return int(binary.NativeEndian.Uint32(data))
			case len(data) >= 2:
				return int(binary.NativeEndian.Uint16(data))
			}
		}
		oob = rest
	}
	return 0
}

// isGSOError reports whether err says the kernel refused a UDP_SEGMENT
// send (a device without checksum offload answers EIO).
func isGSOError(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL)
}
