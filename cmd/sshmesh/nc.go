package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"time"
)

func cmdNC(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("nc", "--wg CONF HOST PORT", io)
	wgPath := fs.String("wg", "", "wg-quick `file` of this (client) node (required)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up connecting after this long")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *wgPath == "" || fs.NArg() != 2 {
		fs.Usage()
		return errUsage
	}
	logger := slog.New(slog.NewTextHandler(io.err, &slog.HandlerOptions{Level: slog.LevelWarn}))
	node, err := startNode(*wgPath, io.err, logger)
	if err != nil {
		return err
	}
	defer node.Close()
	dctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := node.Dial(dctx, "tcp", net.JoinHostPort(fs.Arg(0), fs.Arg(1)))
	if err != nil {
		return err
	}
	defer conn.Close()
	return pipe(ctx, conn, io.in, io.out)
}

// pipe copies in → conn and conn → out until conn's side ends (or ctx). EOF
// on in half-closes conn, so the far side sees it.
func pipe(ctx context.Context, conn net.Conn, in io.Reader, out io.Writer) error {
	done := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, in)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		if err != nil {
			done <- err
		}
	}()
	go func() {
		_, err := io.Copy(out, conn)
		done <- err
	}()
	select {
	case err := <-done:
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		return nil
	}
}
