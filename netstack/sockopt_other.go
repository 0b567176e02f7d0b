//go:build !linux

package netstack

import "net"

// setSocketBuffers raises the socket's buffers as far as the OS allows.
// Failure only costs speed.
func setSocketBuffers(udp *net.UDPConn) {
	_ = udp.SetReadBuffer(socketBufferSize)
	_ = udp.SetWriteBuffer(socketBufferSize)
}

// udpOffload reports no UDP GSO or GRO: they are Linux socket options.
func udpOffload(*net.UDPConn) (tx, rx bool) { return false, false }

const gsoControlSize = 0

func putGSOSize([]byte, uint16) int { return 0 }
func gsoSizeOf([]byte) int          { return 0 }
func isGSOError(error) bool         { return false }
