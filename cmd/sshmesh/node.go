package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"

	"github.com/sshmesh/sshmesh/netstack"
)

// startNode brings up the mesh node described by the wg-quick file at
// path, printing the file's warnings to warn.
func startNode(path string, warn io.Writer, logger *slog.Logger) (*netstack.Node, error) {
	return startNodeAs(path, warn, logger, false)
}

// startClientNode is startNode for a node that only dials out (nc,
// proxy): when its ListenPort is taken (say by the previous nc of a quick
// script), it takes any free port instead. It initiates every handshake,
// so its peers learn the new port from its packets (WireGuard roaming).
func startClientNode(path string, warn io.Writer, logger *slog.Logger) (*netstack.Node, error) {
	return startNodeAs(path, warn, logger, true)
}

func startNodeAs(path string, warn io.Writer, logger *slog.Logger, anyPort bool) (*netstack.Node, error) {
	cfg, warnings, err := netstack.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	if w := othersCanRead(path); w != "" {
		warnings = append(warnings, w)
	}
	for _, w := range warnings {
		fmt.Fprintf(warn, "warning: %s\n", w)
	}
	cfg.Logger = logger
	if anyPort && cfg.ListenPort != 0 && portBusy(cfg.ListenPort) {
		logger.Info("ListenPort in use; using a free port (peers learn it from our packets)", "file", path, "port", cfg.ListenPort)
		cfg.ListenPort = 0
	}
	node, err := netstack.New(cfg)
	if err != nil && anyPort && cfg.ListenPort != 0 && errors.Is(err, syscall.EADDRINUSE) {
		logger.Info("ListenPort in use; using a free port (peers learn it from our packets)", "file", path, "port", cfg.ListenPort)
		cfg.ListenPort = 0
		node, err = netstack.New(cfg)
	}
	return node, err
}

// portBusy reports whether UDP port is taken on the wildcard address.
func portBusy(port uint16) bool {
	c, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	c.Close()
	return false
}

// othersCanRead returns a warning when the wg-quick file at path, which
// holds a private key, can be read by other users (as wg-quick warns), or
// "".
func othersCanRead(path string) string {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return ""
	}
	return fmt.Sprintf("%s is readable by other users (mode %04o) and holds a private key: chmod 600 %s", path, fi.Mode().Perm(), path)
}
