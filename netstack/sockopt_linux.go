package netstack

import (
	"net"

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
