// Command httpproxy is an identity-aware HTTP reverse proxy on the mesh. It
// serves HTTP on the node's mesh address and forwards each request to a
// backend on loopback, adding headers that say who is calling as the mesh
// proved it:
//
//	X-Mesh-Key    the caller's WireGuard public key (base64, as wg prints it)
//	X-Mesh-Node   the caller's node name in the policy
//	X-Mesh-Owner  the node's owner (e.g. alice@example.com), when it has one
//	X-Mesh-Tags   the node's tags, comma-separated, when it has any
//
// Every X-Mesh-* header the client sent is removed first, so the backend can
// trust them. A caller whose key the policy document does not list gets 403.
// The backend itself should listen on loopback only.
//
//	httpproxy --wg node.conf --policy policy.hujson --backend http://127.0.0.1:8081 [--port 80]
//
// Copy this file to put any HTTP service behind mesh identities.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

type options struct {
	wgPath, policyPath, backend string
	port                        int
}

func main() {
	var o options
	flag.StringVar(&o.wgPath, "wg", "", "wg-quick `file` of this node (required)")
	flag.StringVar(&o.policyPath, "policy", "", "policy `file` naming the nodes (required)")
	flag.StringVar(&o.backend, "backend", "", "backend `URL`, e.g. http://127.0.0.1:8081 (required)")
	flag.IntVar(&o.port, "port", 80, "HTTP `port` on the mesh address")
	flag.Parse()
	if o.wgPath == "" || o.policyPath == "" || o.backend == "" {
		flag.Usage()
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, o, logger); err != nil {
		logger.Error("httpproxy failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, logger *slog.Logger) error {
	backend, err := url.Parse(o.backend)
	if err != nil {
		return fmt.Errorf("--backend: %w", err)
	}
	doc, err := policy.Load(o.policyPath)
	if err != nil {
		return err
	}
	cfg, warnings, err := netstack.LoadConfig(o.wgPath)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		logger.Warn(w)
	}
	cfg.Logger = logger
	node, err := netstack.New(cfg)
	if err != nil {
		return err
	}
	defer node.Close()

	ln, err := node.Listen("tcp", ":"+strconv.Itoa(o.port))
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           newProxy(doc, backend, logger),
		ReadHeaderTimeout: 10 * time.Second,
		// Every conn of a node's listener is a *netstack.Conn that knows
		// its WireGuard peer; put it in the request's context for the
		// handler. (No SSH package needed to learn who is calling.)
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if mc, ok := c.(*netstack.Conn); ok {
				ctx = context.WithValue(ctx, connKey{}, mc)
			}
			return ctx
		},
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("proxy serving", "addrs", fmt.Sprint(node.Addresses()), "port", o.port, "backend", backend.String())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type connKey struct{}

// Identity headers: the proxy owns every header with this prefix.
const headerPrefix = "X-Mesh-"

// newProxy returns the handler: 403 for callers the policy does not name,
// otherwise the request goes to backend with the caller's identity.
func newProxy(doc *policy.Document, backend *url.URL, logger *slog.Logger) http.Handler {
	rp := &httputil.ReverseProxy{
		// Rewrite runs after the hop-by-hop headers are gone, so nothing
		// the client sends (not even "Connection: X-Mesh-Owner") can
		// remove or replace what is set here.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(backend)
			pr.SetXForwarded()
			for name := range pr.Out.Header {
				if strings.HasPrefix(http.CanonicalHeaderKey(name), headerPrefix) {
					delete(pr.Out.Header, name)
				}
			}
			id := pr.In.Context().Value(idKey{}).(policy.Identity)
			h := pr.Out.Header
			h.Set("X-Mesh-Key", id.Key.String())
			h.Set("X-Mesh-Node", id.Node)
			if id.Owner != "" {
				h.Set("X-Mesh-Owner", id.Owner)
			}
			if len(id.Tags) > 0 {
				h.Set("X-Mesh-Tags", strings.Join(id.Tags, ","))
			}
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := r.Context().Value(connKey{}).(*netstack.Conn)
		// Not a mesh conn (cannot happen on a node's listener), or the
		// conn's address no longer belongs to the peer it was accepted
		// from (SetPeers moved it): refuse.
		if !ok || !c.PeerCurrent() {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		key := c.PeerKey()
		id, known := doc.Node(key)
		if !known {
			logger.Warn("refused: peer not in the policy", "peer", key.String(), "addr", r.RemoteAddr)
			http.Error(w, "forbidden: your node is not in this mesh's policy", http.StatusForbidden)
			return
		}
		logger.Info("request", "peer", key.String(), "node", id.Node, "owner", id.Owner, "method", r.Method, "path", r.URL.Path)
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), idKey{}, id)))
	})
}

type idKey struct{}
