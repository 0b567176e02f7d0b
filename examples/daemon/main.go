// Command daemon is the smallest useful embedding of sshmesh: a program
// that does its own work (here, a status page counting ticks) and also
// accepts SSH into the machine it runs on, with the default session layer
// (real login shells as the local user the policy maps the caller to).
//
// Both services listen only on the node's mesh address, inside this
// process: the host's own port 22 and firewall are untouched.
//
//	daemon --wg node.conf --policy policy.hujson [--state DIR]
//
// node.conf is an ordinary wg-quick file; policy.hujson is a policy
// document (go doc github.com/sshmesh/sshmesh/policy). SIGTERM or SIGINT
// shuts down gracefully: no new conns, open SSH sessions get up to 10 s.
// Copy this file to start your own daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

func main() {
	wgPath := flag.String("wg", "", "wg-quick `file` of this node (required)")
	policyPath := flag.String("policy", "", "policy `file` (required)")
	stateDir := flag.String("state", ".", "`dir` for the SSH host key")
	flag.Parse()
	if *wgPath == "" || *policyPath == "" {
		flag.Usage()
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	// SIGTERM (systemd stop, kill) and SIGINT (^C) cancel ctx.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, *wgPath, *policyPath, *stateDir, logger); err != nil {
		logger.Error("daemon failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, wgPath, policyPath, stateDir string, logger *slog.Logger) error {
	// 1. The mesh node: WireGuard and a TCP/IP stack inside this process.
	cfg, warnings, err := netstack.LoadConfig(wgPath)
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

	// 2. Who may log in, and as whom.
	doc, err := policy.Load(policyPath)
	if err != nil {
		return err
	}

	// 3. The SSH server. Handler nil means sshmesh.LoginHandler(): a real
	// login shell or command as the mapped local user (needs root to run
	// as anyone but the daemon's own user).
	hostKey, err := sshmesh.LoadOrCreateHostKey(filepath.Join(stateDir, "ssh_host_ed25519_key"))
	if err != nil {
		return err
	}
	srv := &sshmesh.Server{Policy: doc, HostKeys: []ssh.Signer{hostKey}, Logger: logger}
	sshLn, err := node.Listen("tcp", ":22")
	if err != nil {
		return err
	}

	// 4. The daemon's own work: a ticker, and a status page on the mesh.
	var ticks atomic.Int64
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				ticks.Add(1)
			case <-ctx.Done():
				return
			}
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ok ticks=%d\n", ticks.Load())
	})
	web := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	webLn, err := node.Listen("tcp", ":8080")
	if err != nil {
		return err
	}

	// Serve both until a signal, then shut both down gracefully.
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(sshLn) }()
	go func() { errc <- web.Serve(webLn) }()
	logger.Info("daemon serving", "addrs", fmt.Sprint(node.Addresses()), "ssh", 22, "status", 8080,
		"known_hosts", sshmesh.KnownHostsLine(hostKey.PublicKey(), 22, node.Addresses()...))

	select {
	case err := <-errc: // a listener failed: stop everything
		srv.Close()
		web.Close()
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("SSH sessions still open at the deadline were closed", "err", err)
	}
	if err := web.Shutdown(sctx); err != nil {
		logger.Warn("HTTP shutdown", "err", err)
	}
	for range 2 {
		if err := <-errc; !errors.Is(err, sshmesh.ErrServerClosed) && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			return err
		}
	}
	logger.Info("stopped")
	return nil
}
