package main

import (
	"fmt"
	"net"
	"os"
)

// sdNotify sends state ("READY=1", ...) to systemd when serve runs as a
// Type=notify service: the sd_notify protocol is one datagram of
// newline-separated KEY=value lines to the unixgram socket named by
// $NOTIFY_SOCKET (a leading "@" names an abstract socket, which package
// net maps itself). Without the variable it does nothing.
func sdNotify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// sdReloading is the state that starts a reload: systemd wants the
// CLOCK_MONOTONIC time with RELOADING=1 (where there is one).
func sdReloading() string {
	if us, ok := monotonicMicros(); ok {
		return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", us)
	}
	return "RELOADING=1"
}
