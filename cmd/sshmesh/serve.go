package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/checkpage"
	"github.com/sshmesh/sshmesh/internal/memlimit"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/recorder"
	"github.com/sshmesh/sshmesh/session"
)

func cmdServe(ctx context.Context, args []string, io stdio) (err error) {
	if wantsTailnet(args) {
		return onTailnet(ctx, "serve", args, io)
	}
	fs := newFlags("serve", "--wg CONF --policy FILE [--hostkey PATH] [--port 22]", io)
	wgPath := fs.String("wg", "", "wg-quick `file` of this node (required); its peers are re-read on SIGHUP")
	policyPath := fs.String("policy", "", "policy `file` (HuJSON; required); re-read with --wg on SIGHUP")
	stateDir := fs.String("state", defaultStateDir(), "`dir` for the host key and other state")
	hostKeyPath := fs.String("hostkey", "", "host key `file` (OpenSSH format; made if missing; default STATE/ssh_host_ed25519_key)")
	port := fs.Uint("port", 22, "SSH `port` on the mesh addresses")
	checkPort := fs.Uint("check-port", checkpage.DefaultPort, "`port` of the check-mode approval page on the mesh addresses (0: no check mode, check rules refuse)")
	hostKeysPort := fs.Uint("hostkeys-port", DefaultHostKeysPort, "`port` on the mesh addresses that answers with the SSH host keys, for `sshmesh known-hosts` (0: off)")
	webPort := fs.Uint("web-port", 0, "`port` of the web terminal on the mesh addresses: a login shell in the browser, decided, checked, recorded and audited as ssh (0: off; 8022 is a good choice)")
	checkTimeout := fs.Duration("check-timeout", sshmesh.DefaultCheckTimeout, "how long a login waits for its check approval")
	oidcIssuer := fs.String("oidc-issuer", "", "issuer `URL` of the identity provider for check rules with \"checkProof\": \"oidc\" (device sign-in; the verified email must be the caller's owner)")
	oidcClient := fs.String("oidc-client-id", "", "this server's client `id` at the --oidc-issuer")
	oidcSecret := fs.String("oidc-client-secret-file", "", "`file` holding the client secret for --oidc-client-id (none: a public client)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	recordDir := fs.String("record", "", "`dir` for session recordings (asciicast v2) of rules that say \"record\": true")
	recordInput := fs.Bool("record-input", false, "also record what clients type in recorded sessions (it may hold passwords)")
	pamOn := fs.Bool("pam", false, "run the host's PAM stack (account and session, no auth) for every login, as /etc/pam.d/SERVICE (see docs/pam.d/sshmesh); needs root and the sshmesh-pam helper next to this program or in PATH")
	pamService := fs.String("pam-service", "sshmesh", "PAM `service` name for --pam")
	pamHelper := fs.String("pam-helper", "", "`path` of the sshmesh-pam helper (default: next to this program, else in PATH)")
	fs.Bool("tailnet", false, "serve on an existing tailnet (headscale or Tailscale) instead: runs sshmesh-tailnet serve with these arguments (see its --help)")
	recorderPort := fs.Uint("recorder-port", recorder.DefaultPort, "stream `port` of the recorder nodes that rules name in \"recorders\"")
	recorderTimeout := fs.Duration("recorder-timeout", 10*time.Second, "how long a recorder may take to accept a session or acknowledge what it was sent; past it a fail-closed session ends (254)")
	recordKeepLocal := fs.Bool("record-keep-local", false, "with --record, also keep a local copy of the sessions streamed to recorders")
	memLimit := fs.String("memory-limit", "auto", memlimit.Usage)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *wgPath == "" || *policyPath == "" || fs.NArg() != 0 || *port == 0 || *port > 65535 {
		fs.Usage()
		return errUsage
	}
	logger, err := newLogger(*logFormat, io)
	if err != nil {
		return err
	}
	if *logFormat == "json" {
		// The error that ends serve is an event too, not a plain line.
		defer func() {
			if err != nil && !errors.Is(err, errUsage) {
				logger.Error("serve failed", "err", err)
				err = exitError(1)
			}
		}()
	}
	if err := memlimit.Check(*memLimit); err != nil {
		return err
	}
	// From the start: reading 100,000 peers and nodes makes several times
	// their size in garbage, which the default pacing lets pile up.
	defer memlimit.Set(*memLimit)()
	if *hostKeyPath == "" {
		if err := os.MkdirAll(*stateDir, 0o700); err != nil {
			return err
		}
		*hostKeyPath = filepath.Join(*stateDir, "ssh_host_ed25519_key")
	}

	rl, err := startMesh(*wgPath, *policyPath, logger)
	if err != nil {
		return err
	}
	node, doc, pol := rl.node, rl.pol.doc.Load(), rl.pol
	defer node.Close()
	id, _ := doc.Node(node.PublicKey())

	hostKey, err := sshmesh.LoadOrCreateHostKey(*hostKeyPath)
	if err != nil {
		return err
	}
	ln, err := node.Listen("tcp", ":"+strconv.Itoa(int(*port)))
	if err != nil {
		return err
	}
	if *recordDir != "" {
		if err := os.MkdirAll(*recordDir, 0o700); err != nil {
			return fmt.Errorf("--record: %w", err)
		}
	}
	srv := &sshmesh.Server{Policy: pol, HostKeys: []ssh.Signer{hostKey}, Logger: logger, RecordInput: *recordInput}
	if *pamOn {
		srv.HostRules = session.HostRules{PAMService: *pamService, PAMHelper: *pamHelper}
		if err := srv.HostRules.Validate(); err != nil {
			return fmt.Errorf("serve --pam: %w", err)
		}
	}
	if *checkPort > 65535 || *hostKeysPort > 65535 || *webPort > 65535 || *recorderPort == 0 || *recorderPort > 65535 {
		fs.Usage()
		return errUsage
	}
	srv.Recorder = &recorder.Client{
		Dial:       node.Dial,
		Resolve:    recorder.MeshResolver(func(name string) []policy.Identity { return pol.doc.Load().NodesNamed(name) }, node.Peer, uint16(*recorderPort)),
		Local:      sshmesh.DirRecorder{Dir: *recordDir},
		KeepLocal:  *recordKeepLocal && *recordDir != "",
		AckTimeout: *recorderTimeout,
	}
	if (*oidcIssuer == "") != (*oidcClient == "") || (*oidcSecret != "" && *oidcIssuer == "") {
		return errors.New("--oidc-issuer and --oidc-client-id go together (and --oidc-client-secret-file with them)")
	}
	var idp *checkpage.OIDC
	if *oidcIssuer != "" {
		idp = &checkpage.OIDC{Issuer: *oidcIssuer, ClientID: *oidcClient}
		if *oidcSecret != "" {
			b, err := os.ReadFile(*oidcSecret)
			if err != nil {
				return fmt.Errorf("--oidc-client-secret-file: %w", err)
			}
			idp.ClientSecret = strings.TrimSpace(string(b))
		}
	}
	if *checkPort != 0 {
		checker, err := serveCheckPage(node, pol, uint16(*checkPort), *checkTimeout, *stateDir, idp, logger)
		if err != nil {
			return err
		}
		defer checker.Close()
		srv.Checker = checker
	}

	if *hostKeysPort != 0 {
		hk, err := serveHostKeys(node, uint16(*hostKeysPort), []ssh.PublicKey{hostKey.PublicKey()}, logger)
		if err != nil {
			return err
		}
		defer hk.Close()
	}

	if *webPort != 0 {
		wln, err := node.Listen("tcp", ":"+strconv.Itoa(int(*webPort)))
		if err != nil {
			return fmt.Errorf("--web-port %d: %w", *webPort, err)
		}
		go func() {
			if err := srv.ServeWebTerminal(wln); err != nil && !errors.Is(err, sshmesh.ErrServerClosed) {
				logger.Error("web terminal stopped", "err", err)
			}
		}()
	}

	addrs := node.Addresses()
	knownHosts := sshmesh.KnownHostsLine(hostKey.PublicKey(), uint16(*port), addrs...)
	if *logFormat == "json" {
		// Every line is an event, for log shippers that parse them all.
		logger.Info("serving SSH", "node", id.Name(), "key", node.PublicKey().String(), "addrs", addrs, "port", *port)
		logger.Info("known_hosts", "line", knownHosts)
	} else {
		fmt.Fprintf(io.out, "sshmesh: serving SSH as node %q on %s port %d\n", id.Name(), joinAddrs(addrs), *port)
		fmt.Fprintf(io.out, "known_hosts: %s\n", knownHosts)
		if *webPort != 0 {
			fmt.Fprintf(io.out, "sshmesh: web terminal at http://%s/\n", webHostPort(addrs, uint16(*webPort)))
		}
	}

	rl.srv = srv
	stopReload := onHangup(logger, rl)
	defer stopReload()

	statusCtx, stopStatus := context.WithCancel(ctx)
	defer stopStatus()
	if err := serveStatus(statusCtx, *stateDir, func() (statusReport, error) { return report(node, srv, pol, int(*port)) }, logger); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	// The mesh is up and the SSH listener takes conns (Listen returned).
	notify(logger, "READY=1")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	notify(logger, "STOPPING=1")
	logger.Info("shutting down: waiting up to 10s for open sessions")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("sessions still open at shutdown were closed", "err", err)
	}
	if err := <-errc; !errors.Is(err, sshmesh.ErrServerClosed) {
		return err
	}
	return nil
}

// reloadable is a policy document that SIGHUP can replace.
type reloadable struct {
	doc atomic.Pointer[policy.Document]
}

// Node returns what the current document says about a node.
func (r *reloadable) Node(k meshkey.Public) (policy.Identity, bool) {
	return r.doc.Load().Node(k)
}

// serveCheckPage serves the built-in check approval page on the node's
// mesh addresses, with the identity provider idp (nil: none); approvals
// persist in STATE/check-approvals.json,
// passkeys in STATE/passkeys.json, enrolment invitations (`sshmesh passkey
// invite`) in STATE/passkey-invites.
func serveCheckPage(node *netstack.Node, pol *reloadable, port uint16, timeout time.Duration, stateDir string, idp *checkpage.OIDC, logger *slog.Logger) (*checkpage.Checker, error) {
	ln, err := node.Listen("tcp", ":"+strconv.Itoa(int(port)))
	if err != nil {
		return nil, fmt.Errorf("--check-port %d: %w", port, err)
	}
	checker := &checkpage.Checker{
		Identify:    pol.Node,
		Port:        port,
		Timeout:     timeout,
		StateFile:   filepath.Join(stateDir, "check-approvals.json"),
		PasskeyFile: filepath.Join(stateDir, passkeyFileName),
		InviteDir:   filepath.Join(stateDir, inviteDirName),
		OIDC:        idp,
		Dial:        node.Dial,
		Logger:      logger,
	}
	go func() {
		if err := checker.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("check page stopped", "err", err)
		}
	}()
	return checker, nil
}

// LoginNames lists the login names the current document spells out for a
// caller on a node (policy.LoginNamer), for the web terminal's page.
func (r *reloadable) LoginNames(caller, dst meshkey.Public) []string {
	return r.doc.Load().LoginNames(caller, dst)
}

// webHostPort is the web terminal's host:port on the first mesh address.
func webHostPort(addrs []netip.Addr, port uint16) string {
	if len(addrs) == 0 {
		return ":" + strconv.Itoa(int(port))
	}
	return netip.AddrPortFrom(addrs[0], port).String()
}

func (r *reloadable) Evaluate(ctx context.Context, req policy.Request) (policy.Decision, error) {
	return r.doc.Load().Evaluate(ctx, req)
}

// notify tells systemd state (see sdNotify); a failure is logged only.
func notify(logger *slog.Logger, state string) {
	if err := sdNotify(state); err != nil {
		logger.Warn("systemd notification failed", "err", err)
	}
}

func newLogger(format string, io stdio) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(io.err, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(io.err, nil)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// defaultStateDir is /var/lib/sshmesh for root, else the user's state dir.
func defaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/sshmesh"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "sshmesh")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "sshmesh")
	}
	return ".sshmesh"
}

func joinAddrs(addrs []netip.Addr) string {
	s := ""
	for i, a := range addrs {
		if i > 0 {
			s += ", "
		}
		s += a.String()
	}
	return s
}
