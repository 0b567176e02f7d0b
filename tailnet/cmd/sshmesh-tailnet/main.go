// Command sshmesh-tailnet serves sshmesh on an existing tailnet (headscale
// or Tailscale): it joins the tailnet as a node of its own with tsnet and
// serves SSH, and the check page, on that node's tailnet addresses, with
// callers named by the coordinator (login, tags) and the policy deciding.
//
// Usage:
//
//	sshmesh-tailnet serve --tailnet --policy FILE [--control-url URL] [--auth-key-file FILE]
//	    [--state DIR] [--hostname NAME] [--tags tag:a,tag:b] [--ephemeral] [--port 22] [--check-port 80] [--memory-limit auto]
//
// `sshmesh serve --tailnet ...` runs this program (found beside sshmesh or
// on PATH): the tailnet code is a binary of its own so that `sshmesh nc`,
// the ProxyCommand of every login, stays small and quick to start.
//
// The auth key may also come from the TS_AUTHKEY environment variable; it
// is needed only until the node has logged in once (the state directory
// keeps the login). The node uploads no logs to Tailscale's logging service.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/checkpage"
	"github.com/sshmesh/sshmesh/internal/memlimit"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/tailnet"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "sshmesh-tailnet:", err)
		}
		os.Exit(2)
	}
}

var errUsage = errors.New("usage")

const usage = "usage: sshmesh-tailnet serve --tailnet --policy FILE [--control-url URL] [--auth-key-file FILE] [--state DIR] [--hostname NAME] [--tags tag:a,tag:b] [--ephemeral] [--port 22] [--check-port 80] [--memory-limit auto]"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintln(stderr, usage)
		return errUsage
	}
	fs := flag.NewFlagSet("sshmesh-tailnet serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Bool("tailnet", true, "serve on a tailnet (the only mode of this program; accepted for `sshmesh serve --tailnet`)")
	policyPath := fs.String("policy", "", "policy `file` (HuJSON, \"identity\": \"tailnet\"; required); re-read on SIGHUP")
	controlURL := fs.String("control-url", "", "the coordinator's `URL` (headscale); empty means Tailscale's control plane")
	authKeyFile := fs.String("auth-key-file", "", "`file` holding the auth key (or set TS_AUTHKEY); needed only for the first login")
	stateDir := fs.String("state", defaultStateDir(), "`dir` for the node's tailnet state, the host key and check approvals")
	hostname := fs.String("hostname", "", "the node's `name` on the tailnet (default: the host's)")
	tags := fs.String("tags", "", "comma-separated `tags` the node advertises (tag:server); the coordinator must allow them")
	ephemeral := fs.Bool("ephemeral", false, "an ephemeral node: the coordinator forgets it once it is offline")
	port := fs.Uint("port", 22, "SSH `port` on the tailnet addresses")
	checkPort := fs.Uint("check-port", checkpage.DefaultPort, "`port` of the check-mode approval page on the tailnet addresses (0: check rules refuse)")
	checkTimeout := fs.Duration("check-timeout", sshmesh.DefaultCheckTimeout, "how long a login waits for its check approval")
	recordDir := fs.String("record", "", "`dir` for session recordings of rules that say \"record\": true")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	memLimit := fs.String("memory-limit", "auto", memlimit.Usage)
	uploadLogs := fs.Bool("upload-logs", false, "let tsnet upload its logs to Tailscale's logging service (off: TS_NO_LOGS_NO_SUPPORT)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if *policyPath == "" || fs.NArg() != 0 || *port == 0 || *port > 65535 || *checkPort > 65535 {
		fmt.Fprintln(stderr, usage)
		return errUsage
	}
	var logger *slog.Logger
	switch *logFormat {
	case "text":
		logger = slog.New(slog.NewTextHandler(stderr, nil))
	case "json":
		logger = slog.New(slog.NewJSONHandler(stderr, nil))
	default:
		return fmt.Errorf("--log-format %q: want text or json", *logFormat)
	}
	if err := memlimit.Check(*memLimit); err != nil {
		return err
	}
	doc, err := loadPolicy(*policyPath)
	if err != nil {
		return err
	}
	pol := &reloadable{}
	pol.p.Store(&doc)
	if err := os.MkdirAll(*stateDir, 0o700); err != nil {
		return err
	}
	hostKey, err := sshmesh.LoadOrCreateHostKey(filepath.Join(*stateDir, "ssh_host_ed25519_key"))
	if err != nil {
		return err
	}
	var tagList []string
	if *tags != "" {
		tagList = strings.Split(*tags, ",")
	}
	joinCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	node, err := tailnet.New(joinCtx, tailnet.Config{
		ControlURL:  *controlURL,
		AuthKeyFile: *authKeyFile,
		Dir:         filepath.Join(*stateDir, "tailnet"),
		Hostname:    *hostname,
		Tags:        tagList,
		Ephemeral:   *ephemeral,
		UploadLogs:  *uploadLogs,
		Logger:      logger,
	})
	cancel()
	if err != nil {
		return err
	}
	defer node.Close()

	if *recordDir != "" {
		if err := os.MkdirAll(*recordDir, 0o700); err != nil {
			return fmt.Errorf("--record: %w", err)
		}
	}
	srv := &sshmesh.Server{Policy: pol, HostKeys: []ssh.Signer{hostKey}, Logger: logger, RecordDir: *recordDir}
	if *checkPort != 0 {
		ln, err := node.Listen("tcp", ":"+strconv.Itoa(int(*checkPort)))
		if err != nil {
			return fmt.Errorf("--check-port %d: %w", *checkPort, err)
		}
		checker := &checkpage.Checker{
			// The coordinator vouches for every visitor (tailnet.Conn).
			Identify:  func(meshkey.Public) (policy.Identity, bool) { return policy.Identity{}, false },
			Port:      uint16(*checkPort),
			Timeout:   *checkTimeout,
			StateFile: filepath.Join(*stateDir, "check-approvals.json"),
			Dial:      node.Dial,
			Logger:    logger,
		}
		go func() {
			if err := checker.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("check page stopped", "err", err)
			}
		}()
		defer checker.Close()
		srv.Checker = checker
	}
	ln, err := node.Listen("tcp", ":"+strconv.Itoa(int(*port)))
	if err != nil {
		return err
	}
	defer memlimit.Set(*memLimit)()
	addrs := node.Addresses()
	fmt.Fprintf(stdout, "sshmesh: serving SSH on the tailnet as %q on %s port %d\n", *hostname, joinAddrs(addrs), *port)
	fmt.Fprintf(stdout, "known_hosts: %s\n", sshmesh.KnownHostsLine(hostKey.PublicKey(), uint16(*port), addrs...))

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			p, err := loadPolicy(*policyPath)
			if err != nil {
				logger.Error("policy reload failed; the old policy stays", "err", err)
				continue
			}
			pol.p.Store(&p)
			closed := srv.SetPolicy(pol)
			logger.Info("policy reloaded", "file", *policyPath, "conns_closed", closed)
		}
	}()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down: waiting up to 10s for open sessions")
	sctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("sessions still open at shutdown were closed", "err", err)
	}
	if err := <-errc; !errors.Is(err, sshmesh.ErrServerClosed) {
		return err
	}
	return nil
}

// loadPolicy loads the policy document, which must name callers as the
// tailnet does ("identity": "tailnet").
func loadPolicy(path string) (policy.Policy, error) {
	doc, err := policy.Load(path)
	if err != nil {
		return nil, err
	}
	if src := doc.IdentitySource(); src != "tailnet" {
		return nil, fmt.Errorf("%s: the document names nodes by WireGuard key (\"identity\": %q); on a tailnet it must say \"identity\": \"tailnet\" and name callers by login and tag", path, src)
	}
	return doc, nil
}

// reloadable is the policy SIGHUP replaces.
type reloadable struct{ p atomic.Pointer[policy.Policy] }

// Evaluate asks the current policy.
func (r *reloadable) Evaluate(ctx context.Context, req policy.Request) (policy.Decision, error) {
	return (*r.p.Load()).Evaluate(ctx, req)
}

func defaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/sshmesh-tailnet"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "sshmesh-tailnet")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "sshmesh-tailnet")
	}
	return ".sshmesh-tailnet"
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
