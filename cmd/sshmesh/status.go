package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

// The status of a running `sshmesh serve`, like `wg show` plus `who`: serve
// answers on a Unix socket in its state directory (controlSocket), made
// 0600 in a 0700 directory, so only the server's own user and root can
// connect; `sshmesh status` reads it. The socket answers every conn with
// one JSON document (statusReport) and closes it; it takes no requests.

// controlSocket is the status socket's name in the state directory.
const controlSocket = "control.sock"

// statusReport is what the control socket answers, and `status --json`
// prints.
type statusReport struct {
	Node  statusNode   `json:"node"`
	Peers []statusPeer `json:"peers"`
	Conns []statusConn `json:"conns"`
}

type statusNode struct {
	Name  string       `json:"name"`
	Key   string       `json:"key"`
	Addrs []netip.Addr `json:"addrs"`
	Port  uint16       `json:"port"` // the WireGuard UDP port
	SSH   int          `json:"ssh_port"`
}

type statusPeer struct {
	Name          string         `json:"name,omitempty"`
	Key           string         `json:"key"`
	AllowedIPs    []netip.Prefix `json:"allowed_ips"`
	Endpoint      string         `json:"endpoint,omitempty"`
	LastHandshake *time.Time     `json:"last_handshake,omitempty"`
	RxBytes       uint64         `json:"rx_bytes"`
	TxBytes       uint64         `json:"tx_bytes"`
	Dormant       bool           `json:"dormant"`
}

type statusConn struct {
	ID        string          `json:"id"`
	Key       string          `json:"key"`
	Node      string          `json:"node,omitempty"`
	Owner     string          `json:"owner,omitempty"`
	Addr      string          `json:"addr"`
	User      string          `json:"user"`
	LocalUser string          `json:"local_user"`
	Rule      string          `json:"rule"`
	Since     time.Time       `json:"since"`
	Sessions  []statusSession `json:"sessions"`
}

type statusSession struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`
	Command  string    `json:"command,omitempty"`
	Pty      bool      `json:"pty"`
	Started  time.Time `json:"started"`
	BytesIn  int64     `json:"bytes_in"`
	BytesOut int64     `json:"bytes_out"`
}

// report gathers the status of node and srv, naming peers by pol.
func report(node *netstack.Node, srv *sshmesh.Server, pol policy.Identifier, sshPort int) (statusReport, error) {
	self, _ := pol.Node(node.PublicKey())
	r := statusReport{Node: statusNode{Name: self.Name(), Key: node.PublicKey().String(), Addrs: node.Addresses(), Port: node.ListenPort(), SSH: sshPort},
		Peers: []statusPeer{}, Conns: []statusConn{}}
	peers, err := node.PeerStatus()
	if err != nil {
		return r, err
	}
	for _, p := range peers {
		sp := statusPeer{Key: p.PublicKey.String(), AllowedIPs: p.AllowedIPs, RxBytes: p.RxBytes, TxBytes: p.TxBytes, Dormant: p.Dormant}
		if id, ok := pol.Node(p.PublicKey); ok {
			sp.Name = id.Name()
		}
		if p.Endpoint.IsValid() {
			sp.Endpoint = p.Endpoint.String()
		}
		if !p.LastHandshake.IsZero() {
			t := p.LastHandshake
			sp.LastHandshake = &t
		}
		r.Peers = append(r.Peers, sp)
	}
	for _, c := range srv.Conns() {
		sc := statusConn{ID: c.ID, Key: c.Identity.Key.String(), Node: c.Identity.Node, Owner: c.Identity.Owner, Addr: c.Identity.Addr.String(),
			User: c.Identity.User, LocalUser: c.LocalUser, Rule: c.Rule, Since: c.Since, Sessions: []statusSession{}}
		for _, s := range c.Sessions {
			sc.Sessions = append(sc.Sessions, statusSession{ID: s.ID, Kind: s.Kind, Command: s.Command, Pty: s.Pty, Started: s.Started, BytesIn: s.BytesIn, BytesOut: s.BytesOut})
		}
		r.Conns = append(r.Conns, sc)
	}
	return r, nil
}

// serveStatus answers on STATE/control.sock with the report of gather,
// until ctx ends. A stale socket from an earlier run is replaced.
func serveStatus(ctx context.Context, stateDir string, gather func() (statusReport, error), logger *slog.Logger) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(stateDir, controlSocket)
	os.Remove(path)
	old := umask(0o177) // the socket is born 0600, never briefly wider
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				r, err := gather()
				if err != nil {
					logger.Warn("status not gathered", "err", err)
					return
				}
				json.NewEncoder(c).Encode(r)
			}()
		}
	}()
	return nil
}

// cmdStatus implements `sshmesh status`.
func cmdStatus(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("status", "[--state DIR] [--json]", io)
	stateDir := fs.String("state", defaultStateDir(), "`dir` of the running sshmesh serve (its --state)")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	path := filepath.Join(*stateDir, controlSocket)
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%s: only the user sshmesh serve runs as, and root, may read its status", path)
		}
		return fmt.Errorf("is sshmesh serve running with --state %s? %w", *stateDir, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var r statusReport
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if *asJSON {
		enc := json.NewEncoder(io.out)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printStatus(io, r, time.Now())
	return nil
}

// printStatus writes r as `wg show` and `who` would.
func printStatus(io stdio, r statusReport, now time.Time) {
	fmt.Fprintf(io.out, "node %s (%s)\n  mesh addresses %s, WireGuard port %d, SSH port %d\n\n", r.Node.Name, r.Node.Key, joinAddrs(r.Node.Addrs), r.Node.Port, r.Node.SSH)
	tw := tabwriter.NewWriter(io.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tKEY\tENDPOINT\tHANDSHAKE\tRX\tTX")
	for _, p := range r.Peers {
		hs := "never"
		switch {
		case p.Dormant:
			hs = "dormant"
		case p.LastHandshake != nil:
			hs = now.Sub(*p.LastHandshake).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", orDash(p.Name), p.Key[:8]+"…", orDash(p.Endpoint), hs, p.RxBytes, p.TxBytes)
	}
	tw.Flush()
	fmt.Fprintln(io.out)
	tw = tabwriter.NewWriter(io.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONN\tCALLER\tUSER\tLOCAL USER\tRULE\tSINCE\tSESSIONS")
	for _, c := range r.Conns {
		var ss []string
		for _, s := range c.Sessions {
			what := s.Kind
			if s.Command != "" {
				what += " " + s.Command
			}
			ss = append(ss, fmt.Sprintf("%s (%s, in %d, out %d)", s.ID, what, s.BytesIn, s.BytesOut))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, orDash(c.Node)+" "+c.Addr, c.User, c.LocalUser, orDash(c.Rule),
			c.Since.Format(time.RFC3339), orDash(strings.Join(ss, "; ")))
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
