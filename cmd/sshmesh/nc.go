package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/checkpage"
	"github.com/sshmesh/sshmesh/netstack"
)

func cmdNC(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("nc", "--wg CONF [--no-browser] HOST PORT", io)
	wgPath := fs.String("wg", "", "wg-quick `file` of this (client) node (required)")
	// Two minutes, about what the kernel's TCP gives a connect (ssh has no
	// ConnectTimeout by default): a busy server can take longer than 30 s
	// to complete the WireGuard handshake, since WireGuard retries every
	// 5 s and drops an answer that comes after the retry.
	timeout := fs.Duration("timeout", 2*time.Minute, "give up connecting (WireGuard handshake and TCP connect) after this long")
	noBrowser := fs.Bool("no-browser", false, "do not open check approval pages in a browser ($BROWSER, else xdg-open/open); nc still prints their local link")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *wgPath == "" || fs.NArg() != 2 {
		fs.Usage()
		return errUsage
	}
	// No garbage collection until the conn is up. Starting the node
	// allocates the WireGuard device's batch buffers (about 4 MiB), which
	// stay live: the collector would run four times on ssh's critical path
	// and free nothing. (nc is the one verb of its process, so setting the
	// process-wide percentage is safe.)
	gcPercent := debug.SetGCPercent(-1)
	logger := slog.New(slog.NewTextHandler(io.err, &slog.HandlerOptions{Level: slog.LevelWarn}))
	node, err := startClientNode(*wgPath, io.err, logger)
	if err != nil {
		debug.SetGCPercent(gcPercent)
		return err
	}
	defer node.Close()
	others, release := holdKey(node.PublicKey(), "nc "+filepath.Base(*wgPath))
	defer release()
	// Start the WireGuard handshake now rather than when the first TCP
	// segment reaches the device: it then overlaps setting up the notice
	// listener and the dial. If it cannot start, the dial says why.
	if a, err := netip.ParseAddr(fs.Arg(0)); err == nil {
		if peer, ok := node.PeerForAddr(a); ok {
			node.StartHandshake(peer)
		}
	}
	// Listen before dialing, so a notice cannot come first.
	open := openBrowser
	if *noBrowser {
		open = nil
	}
	notices := watchNotices(node, open, io.err, logger)
	dctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	dialed, progressDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(progressDone)
		dialProgress(node, fs.Arg(0), fs.Arg(1), min(3*time.Second, *timeout/4), dialed, io.err)
	}()
	conn, err := node.Dial(dctx, "tcp", net.JoinHostPort(fs.Arg(0), fs.Arg(1)))
	close(dialed)
	<-progressDone // it writes stderr; from here on, only this goroutine does
	debug.SetGCPercent(gcPercent)
	if err != nil {
		return explainDialError(node, *wgPath, fs.Arg(0), fs.Arg(1), *timeout, err)
	}
	defer conn.Close()
	if w := sameKeyWarning(others); w != "" {
		fmt.Fprintf(io.err, "sshmesh nc: warning: %s\n", w)
	}
	if a, err := netip.ParseAddr(fs.Arg(0)); err == nil {
		// For `sshmesh known-hosts`, which ssh runs while we are up.
		defer offerHostKeys(node, a.Unmap(), logger)()
	}
	if notices != nil {
		defer notices.track(conn)()
	}
	// ssh sends its ProxyCommand SIGHUP when it is done: end the conn
	// properly then, so the server learns at once that the client left.
	hctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stop()
	in, out := io.in, io.out
	if f, ok := in.(*os.File); ok {
		p, restore := pollable(f)
		defer restore()
		in = p
	}
	if f, ok := out.(*os.File); ok {
		p, restore := pollable(f)
		defer restore()
		out = p
	}
	return pipe(hctx, conn, in, out)
}

// ncLinger bounds how long nc keeps its conn once ssh has gone (its
// stdout broken, or SIGHUP): long enough for what ssh wrote last (its
// DISCONNECT, queued behind up to a window of upload data) and our FIN to
// reach the server over a slow, lossy path. nc's TCP lives in the process,
// so what it still holds when it exits is lost, unlike a kernel socket's,
// and the server is left with a silent conn until its keepalives give up.
const ncLinger = 30 * time.Second

// pipe copies in → conn and conn → out until conn's side ends (or ctx). EOF
// on in half-closes conn, so the far side sees it. When out breaks while
// the far side still sends (ssh has exited mid-transfer), pipe keeps
// reading and discarding until the far side closes, or for ncLinger.
func pipe(ctx context.Context, conn net.Conn, in io.Reader, out io.Writer) error {
	done := make(chan error, 2)
	var outBroken atomic.Bool
	closeWrite := func() {
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	inDone := make(chan struct{})
	go func() {
		_, err := io.Copy(conn, in)
		closeWrite()
		close(inDone)
		if err != nil {
			done <- err
		}
	}()
	go func() {
		w := &trackedWriter{w: out}
		_, err := io.Copy(w, conn)
		if w.err != nil {
			// ssh has gone; our side still has to reach the server.
			outBroken.Store(true)
			conn.SetReadDeadline(time.Now().Add(ncLinger))
			io.Copy(io.Discard, conn)
			err = nil
		}
		done <- err
	}()
	select {
	case err := <-done:
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		// ssh has gone. Let what it wrote last reach the far side, then
		// our FIN, and give the far side a moment to answer with its own,
		// so the conn ends cleanly before the node goes away. When ssh left
		// mid-transfer, what we still hold (its DISCONNECT among it) may
		// need longer to get there: up to ncLinger.
		start := time.Now()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		expired := func(now time.Time) bool {
			return now.Sub(start) > time.Second && (!outBroken.Load() || now.Sub(start) > ncLinger)
		}
		for waiting := inDone; ; {
			select {
			case <-waiting:
				closeWrite()
				waiting = nil
			case <-done:
				return nil
			case now := <-tick.C:
				if expired(now) {
					closeWrite()
					return nil
				}
			}
		}
	}
}

// trackedWriter remembers the first error its writer returned.
type trackedWriter struct {
	w   io.Writer
	err error
}

func (t *trackedWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err != nil && t.err == nil {
		t.err = err
	}
	return n, err
}

// noticeWatcher receives check notices (package checkpage) on this node's
// mesh addresses and serves each page on a local link (see localLink),
// which it prints on stderr and opens in the user's browser (unless open is
// nil). It acts on a notice only when it names one of this node's tracked
// conns by its source port and comes from the peer that conn went to, and
// its URL is an approval page on that peer; and on each URL once.
type noticeWatcher struct {
	node   *netstack.Node
	open   func(url string) error
	say    io.Writer // where "opening ..." is printed (ssh shows nc's stderr)
	logger *slog.Logger

	mu     sync.Mutex
	conns  map[uint16]netip.AddrPort // tracked conns: local port → remote
	opened map[string]bool
	links  map[uint16][]*localLink // the local link of each tracked conn
	opens  map[uint16]int          // browsers opened for each tracked conn
}

// maxOpensPerConn bounds the browser tabs one conn's server can make us
// open; more links are only printed.
const maxOpensPerConn = 3

// watchNotices listens on checkpage.NoticePort inside node's stack. It
// returns nil (after logging why) when it cannot listen: browsers are a
// convenience, the banner still has the URL.
func watchNotices(node *netstack.Node, open func(string) error, say io.Writer, logger *slog.Logger) *noticeWatcher {
	ln, err := node.Listen("tcp", ":"+strconv.Itoa(checkpage.NoticePort))
	if err != nil {
		logger.Warn("check notices off: cannot listen", "port", checkpage.NoticePort, "err", err)
		return nil
	}
	w := &noticeWatcher{node: node, open: open, say: say, logger: logger,
		conns: map[uint16]netip.AddrPort{}, opened: map[string]bool{}, links: map[uint16][]*localLink{}, opens: map[uint16]int{}}
	go w.serve(ln)
	return w
}

// track makes notices about conn count until the returned func is called.
func (w *noticeWatcher) track(conn net.Conn) (untrack func()) {
	local, err1 := netip.ParseAddrPort(conn.LocalAddr().String())
	remote, err2 := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err1 != nil || err2 != nil {
		return func() {}
	}
	w.mu.Lock()
	w.conns[local.Port()] = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		links := w.links[local.Port()]
		delete(w.conns, local.Port())
		delete(w.links, local.Port())
		delete(w.opens, local.Port())
		w.mu.Unlock()
		for _, l := range links {
			l.Close()
		}
	}
}

func (w *noticeWatcher) serve(ln net.Listener) {
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := w.handle(c); err != nil {
				w.logger.Warn("check notice ignored", "addr", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// handle reads one notice from c and acts on it if it may.
func (w *noticeWatcher) handle(c net.Conn) error {
	from, ok := sshmesh.PeerOf(c)
	if !ok {
		return errors.New("conn without a mesh peer")
	}
	n, err := checkpage.ReadNotice(c)
	if err != nil {
		return err
	}
	w.mu.Lock()
	remote, tracked := w.conns[n.ConnPort]
	w.mu.Unlock()
	if !tracked {
		return fmt.Errorf("no conn from port %d", n.ConnPort)
	}
	if owner, ok := w.node.PeerForAddr(remote.Addr()); !ok || owner != from.Key {
		return fmt.Errorf("sent by %s, not by %s, the peer of the conn it names", from.Key.Short(), remote.Addr())
	}
	if err := n.Validate(remote.Addr(), n.ConnPort); err != nil {
		return err
	}
	w.mu.Lock()
	seen := w.opened[n.URL]
	w.opened[n.URL] = true
	w.mu.Unlock()
	if seen {
		return nil
	}
	// The page's mesh address is no use to a browser outside the mesh:
	// hand it a loopback link that this node forwards.
	link, err := startLocalLink(n.URL, checkpage.LinkHost(from.Key), w.node.Dial, w.logger)
	if err != nil {
		return err
	}
	w.mu.Lock()
	if _, ok := w.conns[n.ConnPort]; !ok { // the conn ended meanwhile
		w.mu.Unlock()
		link.Close()
		return nil
	}
	// One link per conn: a conn waits for one check at a time, so a new
	// notice means the old check is over (and a server cannot make us
	// listen on many ports).
	old := w.links[n.ConnPort]
	w.links[n.ConnPort] = []*localLink{link}
	w.opens[n.ConnPort]++
	open := w.open != nil && w.opens[n.ConnPort] <= maxOpensPerConn
	w.mu.Unlock()
	for _, l := range old {
		l.Close()
	}
	fmt.Fprintf(w.say, "sshmesh: approve this login in this machine's browser at %s\n", link.URL)
	if !open {
		return nil
	}
	fmt.Fprintf(w.say, "sshmesh: opening the approval page in your browser\n")
	if err := w.open(link.URL); err != nil {
		fmt.Fprintf(w.say, "sshmesh: could not open a browser (%v); open the link above yourself\n", err)
	}
	return nil
}

// openBrowser opens url with $BROWSER (a colon-separated list of commands;
// %s in one stands for the URL, else it is the last argument), else with
// xdg-open (open on macOS). The browser gets no stdio of ours: nc's stdout
// is the SSH stream.
func openBrowser(url string) error {
	var cands [][]string
	if b := os.Getenv("BROWSER"); b != "" {
		for _, c := range strings.Split(b, ":") {
			f := strings.Fields(c)
			if len(f) == 0 {
				continue
			}
			subst := false
			for i := range f {
				if strings.Contains(f[i], "%s") {
					f[i] = strings.ReplaceAll(f[i], "%s", url)
					subst = true
				}
			}
			if !subst {
				f = append(f, url)
			}
			cands = append(cands, f)
		}
	} else if runtime.GOOS == "darwin" {
		cands = [][]string{{"open", url}}
	} else {
		cands = [][]string{{"xdg-open", url}}
	}
	var err error
	for _, c := range cands {
		cmd := exec.Command(c[0], c[1:]...)
		if err = cmd.Start(); err == nil {
			go cmd.Wait()
			return nil
		}
	}
	return err
}

// dialProgress tells the user, on stderr (which ssh shows), what a dial
// that has not finished after delay waits for: the WireGuard handshake
// with the peer at its endpoint, or, with WireGuard up, the TCP port. It
// says it once, unless dialed is closed first.
func dialProgress(node *netstack.Node, host, port string, delay time.Duration, dialed <-chan struct{}, stderr io.Writer) {
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-dialed:
		return
	case <-t.C:
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return
	}
	peer, ok := node.PeerForAddr(addr)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if node.WaitHandshake(ctx, peer) == nil {
		fmt.Fprintf(stderr, "sshmesh nc: WireGuard is up with %s; still waiting for TCP port %s to answer...\n", host, port)
		return
	}
	endpoint := "no endpoint"
	for _, p := range node.Peers() {
		if p.PublicKey == peer && p.Endpoint.IsValid() {
			endpoint = "endpoint " + p.Endpoint.String()
		}
	}
	fmt.Fprintf(stderr, "sshmesh nc: still waiting for a WireGuard handshake with %s (peer %s, %s)...\n", host, peer.Short(), endpoint)
}

// explainDialError turns a failed mesh dial into advice: whether WireGuard
// never shook hands with the peer (wrong endpoint, or the peer does not
// know this node's key: WireGuard then drops the handshake silently), or
// shook hands but nothing accepted the TCP conn.
func explainDialError(node *netstack.Node, conf, host, port string, timeout time.Duration, err error) error {
	addr, perr := netip.ParseAddr(host)
	if perr != nil {
		return err
	}
	peer, ok := node.PeerForAddr(addr)
	if !ok {
		return fmt.Errorf("%s: no [Peer] in %s has AllowedIPs covering %s", host, conf, host)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if node.WaitHandshake(ctx, peer) != nil {
		return fmt.Errorf("no WireGuard handshake with %s (peer %s) within %v: check that peer's Endpoint in %s, "+
			"that it is up and listening there, and that its config lists this node's public key %s", host, peer, timeout, conf, node.PublicKey())
	}
	return fmt.Errorf("%s:%s over the mesh: WireGuard works, but the TCP connection failed: %w (is anything serving port %s there?)", host, port, err, port)
}
