package recorder

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
)

// ServeNode serves a recorder node: streams on port and, unless httpPort
// is 0, the page on httpPort, both through listen (the node's Listen, on
// its mesh or tailnet addresses). It calls ready once both listen, then
// serves until ctx ends (nil) or either stops (its error; nil for the
// page's http.ErrServerClosed).
func (s *Server) ServeNode(ctx context.Context, listen func(network, address string) (net.Listener, error), port, httpPort uint16, ready func()) error {
	ln, err := listen("tcp", ":"+strconv.Itoa(int(port)))
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- s.Serve(ln) }()
	if httpPort != 0 {
		hl, err := listen("tcp", ":"+strconv.Itoa(int(httpPort)))
		if err != nil {
			ln.Close()
			return fmt.Errorf("--http-port %d: %w", httpPort, err)
		}
		go func() { errc <- s.ServePage(hl) }()
	}
	if ready != nil {
		ready()
	}
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		return nil
	}
}
