package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/sshmesh/sshmesh/netstack"
)

// startNode brings up the mesh node described by the wg-quick file at
// path, printing the file's warnings to warn.
func startNode(path string, warn io.Writer, logger *slog.Logger) (*netstack.Node, error) {
	cfg, warnings, err := netstack.LoadConfig(path)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		fmt.Fprintf(warn, "warning: %s\n", w)
	}
	cfg.Logger = logger
	return netstack.New(*cfg)
}
