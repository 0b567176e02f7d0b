package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// TestSOCKSProxyClients: a proxy run by a user other than root serves
// clients whose sockets that user made, and no other's, root's included (a
// root socket may be a deputy's: a server dialing for someone).
func TestSOCKSProxyClients(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	const owner, other = 54321, 54322
	var log sshmeshtest.Buffer
	p := &socksProxy{
		dial:   func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("no mesh here") },
		logger: slog.New(slog.NewTextHandler(&log, nil)),
		owner:  owner,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.serve(ln) }()
	t.Cleanup(func() { ln.Close(); <-done })

	for _, tc := range []struct {
		name   string
		uid    int
		served bool
	}{
		{"owner", owner, true},
		{"root", 0, false},
		{"other", other, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialAsUID(tc.uid)(ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write([]byte{5, 1, 0})
			var m [2]byte
			_, err = io.ReadFull(c, m[:])
			if served := err == nil && m == [2]byte{5, 0}; served != tc.served {
				t.Errorf("uid %d: method reply %v, %v; want served %v", tc.uid, m, err, tc.served)
			}
		})
	}
	log.WaitFor(t, fmt.Sprintf("uid=%d", other))
	if strings.Contains(log.String(), fmt.Sprintf("uid=%d", owner)) {
		t.Errorf("the owner was refused:\n%s", log.String())
	}
}
