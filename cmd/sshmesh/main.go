// Command sshmesh is the command-line side of the sshmesh library: keys,
// a server, a ProxyCommand for the stock ssh client, policy checks and a demo.
//
// Usage:
//
//	sshmesh keygen                      print a new private key (like wg genkey)
//	sshmesh pubkey                      private key on stdin → public key (like wg pubkey)
//	sshmesh serve --wg CONF --policy FILE [--hostkey PATH] [--port 22]
//	sshmesh serve --tailnet --policy FILE [--control-url URL] [--auth-key-file F] [--tags T]   on a tailnet (runs sshmesh-tailnet)
//	sshmesh status [--state DIR] [--json]   peers, conns and sessions of a running serve
//	sshmesh nc --wg CONF HOST PORT      stdin/stdout ↔ HOST:PORT over the mesh (ProxyCommand)
//	sshmesh known-hosts --wg CONF MESH-ADDR [NAME]   host keys over the mesh, as known_hosts lines (KnownHostsCommand)
//	sshmesh ssh-config --wg CONF [--policy FILE]    Host blocks for ~/.ssh/config (Include)
//	sshmesh proxy --wg CONF --socks5 127.0.0.1:PORT   SOCKS5 (CONNECT only) into the mesh, for this user only
//	sshmesh policy check FILE
//	sshmesh policy explain FILE --src NODE --dst NODE --user NAME
//	sshmesh replay [--speed N] FILE     play back a session recording
//	sshmesh demo                        a keyless ssh login over an in-process mesh, step by step
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one verb of the CLI.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdio stdio) error
}

// stdio is what a verb reads and writes, so tests can run verbs in process.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// errUsage reports bad usage; the verb has already printed why.
var errUsage = errors.New("usage")

// exitError ends the program with a status but prints nothing more.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func commands() []command {
	return []command{
		{"keygen", "print a new WireGuard private key", cmdKeygen},
		{"pubkey", "read a private key on stdin, print its public key", cmdPubkey},
		{"serve", "serve SSH on a mesh address", cmdServe},
		{"status", "show a running serve's peers, conns and sessions", cmdStatus},
		{"nc", "connect stdin/stdout to HOST PORT over the mesh (for ssh ProxyCommand)", cmdNC},
		{"known-hosts", "print a mesh node's SSH host keys, fetched over the mesh (for ssh KnownHostsCommand)", cmdKnownHosts},
		{"ssh-config", "print ssh_config Host blocks for the mesh nodes of a wg-quick file", cmdSSHConfig},
		{"proxy", "a SOCKS5 proxy (CONNECT only, on loopback) into the mesh", cmdProxy},
		{"policy", "check or explain a policy document", cmdPolicy},
		{"passkey", "invite an owner to enrol a passkey for check approvals", cmdPasskey},
		{"recorder", "store session recordings streamed by servers, with a page to play them", cmdRecorder},
		{"replay", "play back a session recording (asciicast v2)", cmdReplay},
		{"demo", "show a keyless ssh login over an in-process mesh", cmdDemo},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr})
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, io stdio) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(io.err)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], io)
		var exit exitError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		case errors.As(err, &exit):
			return int(exit)
		}
		fmt.Fprintf(io.err, "sshmesh %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(io.err, "sshmesh: unknown command %q\n\n", args[0])
	usage(io.err)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: sshmesh COMMAND [flags] [args]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'sshmesh COMMAND --help' for a command's flags.")
}

// newFlags returns a FlagSet for a verb that prints its usage to io.err.
func newFlags(name, args string, io stdio) *flag.FlagSet {
	fs := flag.NewFlagSet("sshmesh "+name, flag.ContinueOnError)
	fs.SetOutput(io.err)
	fs.Usage = func() {
		fmt.Fprintf(io.err, "usage: sshmesh %s %s\n", name, args)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, mapping a parse error to errUsage (the flag
// package has already printed it).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}
