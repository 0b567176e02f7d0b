package main

// Host keys proven by the mesh. The server answers on a TCP port of its
// own on its mesh addresses (DefaultHostKeysPort) with its SSH host keys,
// and closes; `sshmesh known-hosts`, which OpenSSH runs as its
// KnownHostsCommand, prints them as known_hosts lines. The answer is
// trusted because of how it arrives: over a WireGuard session with the key
// that the client's wg-quick file lists for that mesh address (the stack
// takes a packet only from the peer that owns its source address).
//
// ssh runs the KnownHostsCommand while its ProxyCommand, `sshmesh nc`, is
// up with the same WireGuard key. A second node with that key would take
// over the peer's session at the server and stall nc's for up to 15 s
// (WireGuard keeps one session per key). So nc offers its own node: it
// listens on a unix socket named by ssh's process id and the mesh address,
// in a directory only this user can enter, and known-hosts asks it first.
// Without such a socket (run by hand, or ssh reached the host some other
// way) known-hosts brings up a node of its own.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/sshmesh/sshmesh/netstack"
)

// DefaultHostKeysPort is the TCP port on a server's mesh addresses that
// answers with its SSH host keys (next to checkpage.NoticePort, 41022).
const DefaultHostKeysPort = 41023

// hostKeysHeader starts every answer, so a client does not take another
// service's bytes for keys.
const hostKeysHeader = "sshmesh-host-keys 1\n"

// maxHostKeysAnswer bounds what a client reads.
const maxHostKeysAnswer = 64 << 10

// serveHostKeys answers every conn on port of node's mesh addresses with
// keys (the header, then one authorized_keys line each) and closes it.
// Closing the returned listener stops it.
func serveHostKeys(node *netstack.Node, port uint16, keys []ssh.PublicKey, logger *slog.Logger) (io.Closer, error) {
	ln, err := node.Listen("tcp", ":"+strconv.Itoa(int(port)))
	if err != nil {
		return nil, fmt.Errorf("--hostkeys-port %d: %w", port, err)
	}
	answer := []byte(hostKeysHeader)
	for _, k := range keys {
		answer = append(answer, ssh.MarshalAuthorizedKey(k)...)
	}
	sl := &stoppableListener{Listener: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if !sl.stopped.Load() {
					logger.Error("host key answers stopped", "err", err)
				}
				return
			}
			go func() {
				defer c.Close()
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(answer); err != nil {
					logger.Debug("host key answer not sent", "addr", c.RemoteAddr().String(), "err", err)
				}
			}()
		}
	}()
	return sl, nil
}

// stoppableListener tells its accept loop that Close was called (the
// stack's listener then returns no net.ErrClosed).
type stoppableListener struct {
	net.Listener
	stopped atomic.Bool
}

func (l *stoppableListener) Close() error {
	l.stopped.Store(true)
	return l.Listener.Close()
}

// fetchHostKeys asks the node at mesh address addr for its host keys and
// returns the answer's lines (authorized_keys format, each checked). It
// refuses an answer that did not come from the peer node's config lists
// for addr.
func fetchHostKeys(ctx context.Context, node *netstack.Node, addr netip.Addr, port uint16) ([]ssh.PublicKey, error) {
	want, ok := node.PeerForAddr(addr)
	if !ok {
		return nil, fmt.Errorf("%s is not a mesh address: no [Peer] has AllowedIPs covering it", addr)
	}
	c, err := node.Dial(ctx, "tcp", netip.AddrPortFrom(addr, port).String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	mc, ok := c.(*netstack.Conn)
	if !ok || mc.PeerKey() != want {
		return nil, fmt.Errorf("%s: the conn is not with peer %s, which the config lists for it", addr, want)
	}
	if d, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(d)
	}
	b, err := io.ReadAll(io.LimitReader(c, maxHostKeysAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("%s port %d: %w", addr, port, err)
	}
	return parseHostKeys(b)
}

// parseHostKeys parses an answer of serveHostKeys.
func parseHostKeys(b []byte) ([]ssh.PublicKey, error) {
	if len(b) > maxHostKeysAnswer {
		return nil, errors.New("host key answer too long")
	}
	rest, ok := bytes.CutPrefix(b, []byte(hostKeysHeader))
	if !ok {
		return nil, errors.New("not an sshmesh host key answer")
	}
	var keys []ssh.PublicKey
	for len(bytes.TrimSpace(rest)) > 0 {
		k, _, _, r, err := ssh.ParseAuthorizedKey(rest)
		if err != nil {
			return nil, fmt.Errorf("host key answer: %w", err)
		}
		keys = append(keys, k)
		rest = r
	}
	if len(keys) == 0 {
		return nil, errors.New("host key answer holds no key")
	}
	return keys, nil
}

func cmdKnownHosts(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("known-hosts", "--wg CONF [--port N] MESH-ADDR [NAME]", io)
	wgPath := fs.String("wg", "", "wg-quick `file` of this (client) node (required)")
	port := fs.Uint("port", DefaultHostKeysPort, "the server's host key `port` (serve --hostkeys-port)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *wgPath == "" || fs.NArg() < 1 || fs.NArg() > 2 || *port == 0 || *port > 65535 {
		fs.Usage()
		return errUsage
	}
	addr, err := netip.ParseAddr(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("%q is not a mesh IP address (give ssh's %%h, with HostName set to the mesh address)", fs.Arg(0))
	}
	addr = addr.Unmap()
	name := addr.String()
	if fs.NArg() == 2 {
		name = fs.Arg(1)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	keys, err := askNC(ctx, addr, uint16(*port))
	if errors.Is(err, errNoNC) {
		keys, err = fetchOwn(ctx, *wgPath, addr, uint16(*port), io)
	}
	if err != nil {
		return err
	}
	for _, k := range keys {
		fmt.Fprintln(io.out, knownhosts.Line([]string{name}, k))
	}
	return nil
}

// fetchOwn brings up a node from wgPath and fetches addr's host keys.
func fetchOwn(ctx context.Context, wgPath string, addr netip.Addr, port uint16, io stdio) ([]ssh.PublicKey, error) {
	logger := slog.New(slog.NewTextHandler(io.err, &slog.HandlerOptions{Level: slog.LevelWarn}))
	node, err := startClientNode(wgPath, io.err, logger)
	if err != nil {
		return nil, err
	}
	defer node.Close()
	if peer, ok := node.PeerForAddr(addr); ok {
		node.StartHandshake(peer)
	}
	keys, err := fetchHostKeys(ctx, node, addr, port)
	if err != nil {
		return nil, fmt.Errorf("host keys of %s over the mesh: %w", addr, err)
	}
	return keys, nil
}

// errNoNC: no `sshmesh nc` of the same ssh offers its node.
var errNoNC = errors.New("no sshmesh nc to ask")

// ncSocketPath is where the nc that ssh (process sshPID) runs as its
// ProxyCommand to addr offers its node.
func ncSocketPath(sshPID int, addr netip.Addr) (string, error) {
	dir, err := privateRuntimeDir()
	if err != nil {
		return "", err
	}
	name := strconv.Itoa(sshPID) + "-" + strings.ReplaceAll(addr.String(), ":", "_") + ".sock"
	return filepath.Join(dir, name), nil
}

// privateRuntimeDir returns (making it) a directory only this user can
// enter: $XDG_RUNTIME_DIR/sshmesh, else $TMPDIR/sshmesh-UID.
func privateRuntimeDir() (string, error) {
	dir := filepath.Join(os.TempDir(), "sshmesh-"+strconv.Itoa(os.Getuid()))
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		dir = filepath.Join(d, "sshmesh")
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", err
	}
	if err := checkPrivateDir(fi); err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	return dir, nil
}

// askNC asks the nc that our ssh runs (our parent's other child) for
// addr's host keys; errNoNC when there is none.
func askNC(ctx context.Context, addr netip.Addr, port uint16) ([]ssh.PublicKey, error) {
	path, err := ncSocketPath(os.Getppid(), addr)
	if err != nil {
		return nil, errNoNC
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, errNoNC
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "%d\n", port); err != nil {
		return nil, fmt.Errorf("asking sshmesh nc: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(c, maxHostKeysAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("asking sshmesh nc: %w", err)
	}
	if msg, ok := bytes.CutPrefix(b, []byte("error: ")); ok {
		return nil, fmt.Errorf("host keys of %s over the mesh (through sshmesh nc): %s", addr, bytes.TrimSpace(msg))
	}
	return parseHostKeys(b)
}

// offerHostKeys lets `sshmesh known-hosts`, run by the same ssh, fetch
// addr's host keys over node (see the top of this file). It is best
// effort: without the socket, known-hosts brings up its own node. The
// returned func removes the socket.
func offerHostKeys(node *netstack.Node, addr netip.Addr, logger *slog.Logger) (stop func()) {
	path, err := ncSocketPath(os.Getppid(), addr)
	if err != nil {
		logger.Debug("host key socket off", "err", err)
		return func() {}
	}
	os.Remove(path) // a crashed nc's, of a process id seen again
	ln, err := net.Listen("unix", path)
	if err != nil {
		logger.Debug("host key socket off", "err", err)
		return func() {}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go answerKnownHosts(c, node, addr)
		}
	}()
	return func() { ln.Close() } // removes the socket file
}

// answerKnownHosts serves one request on the nc socket: a port in, the
// answer (or "error: ...") out.
func answerKnownHosts(c net.Conn, node *netstack.Node, addr netip.Addr) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, 16)).ReadString('\n')
	if err != nil {
		return
	}
	port, err := strconv.ParseUint(strings.TrimSpace(line), 10, 16)
	if err != nil || port == 0 {
		fmt.Fprintf(c, "error: bad port %q\n", strings.TrimSpace(line))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	keys, err := fetchHostKeys(ctx, node, addr, uint16(port))
	if err != nil {
		fmt.Fprintf(c, "error: %v\n", err)
		return
	}
	out := []byte(hostKeysHeader)
	for _, k := range keys {
		out = append(out, ssh.MarshalAuthorizedKey(k)...)
	}
	c.Write(out)
}
