//go:build !linux

package netstack

import "net"

// setSocketBuffers raises the socket's buffers as far as the OS allows.
// Failure only costs speed.
func setSocketBuffers(udp *net.UDPConn) {
	_ = udp.SetReadBuffer(socketBufferSize)
	_ = udp.SetWriteBuffer(socketBufferSize)
}
