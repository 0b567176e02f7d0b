package tailnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"tailscale.com/client/local"
	"tailscale.com/envknob"
	"tailscale.com/logtail"
	"tailscale.com/tsnet"
)

// Config says how a [Node] joins its tailnet.
type Config struct {
	// ControlURL is the coordinator: a headscale server's URL, or "" for
	// Tailscale's hosted control plane.
	ControlURL string

	// AuthKey logs the node in the first time (a headscale pre-auth key or
	// a Tailscale auth key). "" means AuthKeyFile, else the TS_AUTHKEY
	// environment variable; a node whose state directory holds a login
	// needs none.
	AuthKey string

	// AuthKeyFile is a file holding the auth key (surrounding space is
	// ignored), read by [New]; it keeps the key out of the command line
	// and the environment.
	AuthKeyFile string

	// Dir is the state directory: the node's keys and login. Required; keep
	// it private (New creates it with mode 0700).
	Dir string

	// Hostname is the node's name on the tailnet. "" means the host's.
	Hostname string

	// Tags are the tags the node asks for (tag:server); the coordinator's
	// tagOwners must allow them to the auth key's owner. A tagged node
	// belongs to no user.
	Tags []string

	// Ephemeral makes the coordinator forget the node soon after it goes
	// offline.
	Ephemeral bool

	// UploadLogs lets tsnet upload its logs to Tailscale's logging service
	// (log.tailscale.com), as tailscaled does by default. Off by default: the
	// node then sets TS_NO_LOGS_NO_SUPPORT for the whole process.
	UploadLogs bool

	// Logger receives the node's log; tsnet's own chatter goes to it at
	// debug level. nil discards it.
	Logger *slog.Logger
}

// Node is this program's node on a tailnet.
type Node struct {
	ts     *tsnet.Server
	lc     *local.Client
	logger *slog.Logger
	watch  *watcher

	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
}

// New joins the tailnet: it starts the node and waits until the
// coordinator has logged it in and it has its addresses, or ctx ends.
func New(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Dir == "" {
		return nil, errors.New("tailnet: Config.Dir (the state directory) is required")
	}
	for _, t := range cfg.Tags {
		if !strings.HasPrefix(t, "tag:") || len(t) == len("tag:") {
			return nil, fmt.Errorf("tailnet: tag %q: a tag is tag:NAME", t)
		}
	}
	authKey := cfg.AuthKey
	if authKey == "" && cfg.AuthKeyFile != "" {
		b, err := os.ReadFile(cfg.AuthKeyFile)
		if err != nil {
			return nil, fmt.Errorf("tailnet: auth key file: %w", err)
		}
		if authKey = strings.TrimSpace(string(b)); authKey == "" {
			return nil, fmt.Errorf("tailnet: auth key file %s is empty", cfg.AuthKeyFile)
		}
	}
	if !cfg.UploadLogs {
		envknob.SetNoLogsNoSupport()
		logtail.Disable()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("tailnet: state directory: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ts := &tsnet.Server{
		Dir:           cfg.Dir,
		Hostname:      cfg.Hostname,
		AuthKey:       authKey,
		ControlURL:    cfg.ControlURL,
		Ephemeral:     cfg.Ephemeral,
		AdvertiseTags: cfg.Tags,
		Logf: func(format string, args ...any) {
			logger.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)), "from", "tsnet")
		},
		UserLogf: func(format string, args ...any) {
			logger.Info(strings.TrimSpace(fmt.Sprintf(format, args...)), "from", "tsnet")
		},
	}
	if _, err := ts.Up(ctx); err != nil {
		ts.Close()
		return nil, fmt.Errorf("tailnet: joining %s: %w", controlName(cfg.ControlURL), err)
	}
	lc, err := ts.LocalClient()
	if err != nil {
		ts.Close()
		return nil, fmt.Errorf("tailnet: %w", err)
	}
	n := &Node{ts: ts, lc: lc, logger: logger}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.watch, err = startWatcher(ctx, n.ctx, lc, logger)
	if err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func controlName(url string) string {
	if url == "" {
		return "Tailscale's control plane"
	}
	return url
}

// Addresses returns the node's tailnet addresses (an IPv4 and an IPv6).
func (n *Node) Addresses() []netip.Addr {
	v4, v6 := n.ts.TailscaleIPs()
	var out []netip.Addr
	for _, a := range []netip.Addr{v4, v6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// Dial opens a conn to address over the tailnet.
func (n *Node) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return n.ts.Dial(ctx, network, address)
}

// LocalClient returns the client of the node's local API (status, WhoIs).
func (n *Node) LocalClient() *local.Client { return n.lc }

// Close leaves the tailnet (an ephemeral node is then forgotten by the
// coordinator) and closes the node's listeners and conns.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	if n.cancel != nil {
		n.cancel()
	}
	return n.ts.Close()
}
