// Command sshmesh-tailnet serves sshmesh on an existing tailnet (headscale
// or Tailscale): it joins the tailnet as a node of its own with tsnet and
// serves SSH, and the check page, on that node's tailnet addresses, with
// callers named by the coordinator (login, tags) and the policy deciding.
//
// Usage:
//
//	sshmesh-tailnet serve --tailnet --policy FILE [--control-url URL] [--auth-key-file FILE]
//	    [--state DIR] [--hostname NAME] [--tags tag:a,tag:b] [--ephemeral] [--port 22] [--check-port 80] [--memory-limit auto]
//	sshmesh-tailnet recorder --tailnet --dir DIR --senders LIST [--viewers LIST] [--control-url URL]
//	    [--auth-key-file FILE] [--state DIR] [--hostname NAME] [--tags tag:recorder] [--port 9422] [--http-port 80]
//
// `sshmesh serve --tailnet ...` and `sshmesh recorder --tailnet ...` run
// this program (found beside sshmesh or on PATH): the tailnet code is a binary of its own so that `sshmesh nc`,
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
	"github.com/sshmesh/sshmesh/recorder"
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

const usage = "usage: sshmesh-tailnet serve --tailnet --policy FILE [--control-url URL] [--auth-key-file FILE] [--state DIR] [--hostname NAME] [--tags tag:a,tag:b] [--ephemeral] [--port 22] [--check-port 80] [--memory-limit auto]\n" +
	"       sshmesh-tailnet recorder --tailnet --dir DIR --senders LIST [--viewers LIST] [--control-url URL] [--auth-key-file FILE] [--state DIR] [--hostname NAME] [--tags tag:recorder] [--port 9422] [--http-port 80]"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			return serve(ctx, args[1:], stdout, stderr)
		case "recorder":
			return runRecorder(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintln(stderr, usage)
	return errUsage
}

// serve serves SSH and the check page on the tailnet.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sshmesh-tailnet serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jf := addJoinFlags(fs, "sshmesh-tailnet")
	policyPath := fs.String("policy", "", "policy `file` (HuJSON, \"identity\": \"tailnet\"; required); re-read on SIGHUP")
	port := fs.Uint("port", 22, "SSH `port` on the tailnet addresses")
	checkPort := fs.Uint("check-port", checkpage.DefaultPort, "`port` of the check-mode approval page on the tailnet addresses (0: check rules refuse)")
	checkTimeout := fs.Duration("check-timeout", sshmesh.DefaultCheckTimeout, "how long a login waits for its check approval")
	recordDir := fs.String("record", "", "`dir` for session recordings of rules that say \"record\": true and name no recorder")
	recordInput := fs.Bool("record-input", false, "also record what callers type, in recorded sessions")
	recorderPort := fs.Uint("recorder-port", recorder.DefaultPort, "stream `port` of the recorder nodes that rules name in \"recorders\" (tag:NAME: the tailnet's nodes with that tag)")
	recorderTimeout := fs.Duration("recorder-timeout", 10*time.Second, "how long a recorder may take to accept a session or acknowledge what it was sent; past it a fail-closed session ends (254)")
	recordKeepLocal := fs.Bool("record-keep-local", false, "with --record, also keep a local copy of the sessions streamed to recorders")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if *policyPath == "" || fs.NArg() != 0 || *port == 0 || *port > 65535 || *checkPort > 65535 || *recorderPort == 0 || *recorderPort > 65535 {
		fmt.Fprintln(stderr, usage)
		return errUsage
	}
	logger, err := jf.check(stderr)
	if err != nil {
		return err
	}
	doc, err := loadPolicy(*policyPath)
	if err != nil {
		return err
	}
	pol := &reloadable{}
	pol.p.Store(&doc)
	hostKey, err := sshmesh.LoadOrCreateHostKey(filepath.Join(jf.state(), "ssh_host_ed25519_key"))
	if err != nil {
		return err
	}
	node, err := jf.join(ctx, logger)
	if err != nil {
		return err
	}
	defer node.Close()

	if *recordDir != "" {
		if err := os.MkdirAll(*recordDir, 0o700); err != nil {
			return fmt.Errorf("--record: %w", err)
		}
	}
	srv := &sshmesh.Server{Policy: pol, HostKeys: []ssh.Signer{hostKey}, Logger: logger, RecordInput: *recordInput}
	srv.Recorder = &recorder.Client{
		Dial:       node.Dial,
		Resolve:    node.RecorderResolver(uint16(*recorderPort)),
		Local:      sshmesh.DirRecorder{Dir: *recordDir},
		KeepLocal:  *recordKeepLocal && *recordDir != "",
		AckTimeout: *recorderTimeout,
	}
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
			StateFile: filepath.Join(jf.state(), "check-approvals.json"),
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
	defer memlimit.Set(*jf.memLimit)()
	addrs := node.Addresses()
	fmt.Fprintf(stdout, "sshmesh: serving SSH on the tailnet as %q on %s port %d\n", *jf.hostname, joinAddrs(addrs), *port)
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

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
