// Command appliance serves SSH into a device that has no OS users: every
// session is a small command shell written in Go, and what a caller may do
// follows from who the mesh says they are.
//
// The policy maps mesh owners to the appliance's two roles, which are the
// login names: "admin" may read and change settings, "viewer" may only read
// them. So `ssh admin@100.64.0.1` works for the owners the policy lets in
// as admin, and nobody else (see policy.hujson in this directory).
//
//	appliance --wg node.conf --policy policy.hujson [--state DIR]
//
// With a terminal (plain `ssh admin@host`) the shell edits lines (arrows,
// history, ^A/^E, ^C/^D to leave) with golang.org/x/term and follows window
// size changes; without one (`ssh admin@host get hostname`, or a script on
// stdin) it runs the commands and exits with their status. Copy this file
// to start your own appliance shell.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

type options struct {
	wgPath, policyPath, stateDir string
}

func main() {
	var o options
	flag.StringVar(&o.wgPath, "wg", "", "wg-quick `file` of this node (required)")
	flag.StringVar(&o.policyPath, "policy", "", "policy `file` mapping owners to the admin and viewer roles (required)")
	flag.StringVar(&o.stateDir, "state", ".", "`dir` for the SSH host key")
	flag.Parse()
	if o.wgPath == "" || o.policyPath == "" {
		flag.Usage()
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, o, logger); err != nil {
		logger.Error("appliance failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, logger *slog.Logger) error {
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
	hostKey, err := sshmesh.LoadOrCreateHostKey(filepath.Join(o.stateDir, "ssh_host_ed25519_key"))
	if err != nil {
		return err
	}
	ln, err := node.Listen("tcp", ":22")
	if err != nil {
		return err
	}

	a := &appliance{started: time.Now(), settings: map[string]string{
		"hostname": "appliance-1", "ntp": "pool.ntp.org", "led": "on",
	}}
	srv := &sshmesh.Server{
		// The policy decides the role: the session's LocalUser is the
		// login name the rule accepted, "admin" or "viewer".
		Policy:   doc,
		Handler:  a,
		HostKeys: []ssh.Signer{hostKey},
		Logger:   logger,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("appliance serving", "addrs", fmt.Sprint(node.Addresses()),
		"known_hosts", sshmesh.KnownHostsLine(hostKey.PublicKey(), 22, node.Addresses()...))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-errc; !errors.Is(err, sshmesh.ErrServerClosed) {
		return err
	}
	return nil
}

// appliance is the device's state and its shell; it is an sshmesh.Handler.
type appliance struct {
	started  time.Time
	mu       sync.Mutex
	settings map[string]string
}

// ServeSSH runs one session: a command (ssh host CMD), or the shell.
func (a *appliance) ServeSSH(s *sshmesh.Session) {
	id := s.Identity()
	sh := &shell{a: a, role: s.LocalUser(), who: id.Owner, node: id.Node, cols: 80}
	if sh.who == "" {
		sh.who = id.Name() // a tagged node has no owner
	}

	if cmd := s.RawCommand(); cmd != "" {
		sh.out = s
		s.Exit(sh.exec(cmd))
		return
	}

	pty, isTerm := s.Pty()
	if !isTerm {
		// No terminal: read commands from stdin, no prompt, no echo.
		sh.out = s
		code := 0
		sc := bufio.NewScanner(s)
		for sc.Scan() && !sh.done {
			code = sh.exec(sc.Text())
		}
		s.Exit(code)
		return
	}

	// A terminal: the client's tty is in raw mode, so the line discipline
	// (echo, editing, history, \r\n) is ours; x/term provides it.
	t := term.NewTerminal(s, sh.role+"@"+a.get("hostname")+"> ")
	sh.out = t
	sh.resize(t, pty.Window)
	go func() {
		for w := range s.WindowChanges() { // closed when the session ends
			sh.resize(t, w)
		}
	}()
	fmt.Fprintf(t, "Welcome, %s (node %s). You are %s. Type help.\n", sh.who, sh.node, sh.role)
	for !sh.done {
		line, err := t.ReadLine()
		if err != nil { // ^D, ^C or the client went away
			break
		}
		sh.exec(line)
	}
}

// shell is one session's interpreter.
type shell struct {
	a          *appliance
	out        io.Writer
	role, who  string
	node       string
	mu         sync.Mutex
	cols, rows int
	done       bool
}

func (sh *shell) resize(t *term.Terminal, w sshmesh.Window) {
	sh.mu.Lock()
	sh.cols, sh.rows = int(w.Cols), int(w.Rows)
	sh.mu.Unlock()
	t.SetSize(int(w.Cols), int(w.Rows))
}

func (sh *shell) width() int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.cols
}

// exec runs one command line and returns its exit status.
func (sh *shell) exec(line string) int {
	args := strings.Fields(line)
	if len(args) == 0 {
		return 0
	}
	switch args[0] {
	case "help":
		fmt.Fprintln(sh.out, "commands: help, whoami, status, get [KEY], set KEY VALUE (admin), reboot, exit")
	case "whoami":
		fmt.Fprintf(sh.out, "%s on node %s, role %s\n", sh.who, sh.node, sh.role)
	case "status":
		sh.mu.Lock()
		cols, rows := sh.cols, sh.rows
		sh.mu.Unlock()
		fmt.Fprintf(sh.out, "up %s, terminal %dx%d\n", time.Since(sh.a.started).Round(time.Second), cols, rows)
	case "get":
		if len(args) == 2 {
			v, ok := sh.a.lookup(args[1])
			if !ok {
				fmt.Fprintf(sh.out, "no setting %q\n", args[1])
				return 1
			}
			fmt.Fprintln(sh.out, v)
			return 0
		}
		for _, kv := range sh.a.list() {
			// Fit each line to the terminal, as `ls` does.
			if w := sh.width(); w > 1 && len(kv) >= w {
				kv = kv[:w-2] + "…"
			}
			fmt.Fprintln(sh.out, kv)
		}
	case "set":
		if sh.role != "admin" {
			fmt.Fprintf(sh.out, "set: permission denied: role %s can only get\n", sh.role)
			return 1
		}
		if len(args) < 3 {
			fmt.Fprintln(sh.out, "usage: set KEY VALUE")
			return 2
		}
		sh.a.set(args[1], strings.Join(args[2:], " "))
		fmt.Fprintf(sh.out, "%s = %s\n", args[1], strings.Join(args[2:], " "))
	case "reboot":
		// A real device would reboot here; we end the session.
		fmt.Fprintln(sh.out, "rebooting…")
		sh.done = true
	case "exit", "quit":
		sh.done = true
	default:
		fmt.Fprintf(sh.out, "%s: unknown command (try help)\n", args[0])
		return 127
	}
	return 0
}

func (a *appliance) get(k string) string { v, _ := a.lookup(k); return v }

func (a *appliance) lookup(k string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.settings[k]
	return v, ok
}

func (a *appliance) set(k, v string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.settings[k] = v
}

func (a *appliance) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var l []string
	for k, v := range a.settings {
		l = append(l, k+" = "+v)
	}
	slices.Sort(l)
	return l
}
