package main

import "net"

// freeUDPPorts returns two UDP ports on 127.0.0.1 that were free a moment ago.
func freeUDPPorts() (int, int, error) {
	var ports [2]int
	for i := range ports {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, 0, err
		}
		defer c.Close()
		ports[i] = c.LocalAddr().(*net.UDPAddr).Port
	}
	return ports[0], ports[1], nil
}
