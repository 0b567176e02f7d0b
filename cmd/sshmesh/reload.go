package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"unicode"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

// meshReload re-reads serve's wg-quick file and policy together (on
// SIGHUP) and applies both or neither: the peers through
// netstack.Node.ParseUpdate and ApplyUpdate, which parse only the [Peer]
// sections that changed and leave unchanged peers and their sessions
// alone, then the policy through Server.SetPolicy. A removed peer's conns
// end. A bad file, or a change to what the running node cannot take live
// ([Interface]: PrivateKey, Address, ListenPort, MTU), is logged with its
// file and line and changes nothing.
//
// `sshmesh recorder` reloads the same way, with no SSH server (srv nil),
// its own check of a new policy (its --senders and --viewers must still
// name nodes of it), and recheck ending the recording streams of the
// senders the new files no longer allow.
//
// A file whose bytes are those last applied is not parsed again (a
// wg-quick file with an Endpoint host name is, to resolve it anew): with
// 100,000 peers and nodes, parsing the file that did not change was most
// of the work of a reload that changes one peer or one rule.
type meshReload struct {
	wgPath, policyPath string
	started            netstack.Config // as the node was started (interfaceOf): its [Interface] is fixed
	// The digests of the files' bytes last applied; the zero value
	// matches no file.
	wgSum     wgDigest
	policySum [sha256.Size]byte // policy.Document.Sum
	node      *netstack.Node
	pol       *reloadable
	srv       *sshmesh.Server              // nil: the node serves no SSH
	check     func(*policy.Document) error // more checks of a new policy; nil: none
	recheck   func() int                   // ends what the new files no longer allow (the recorder's streams) and counts it; nil: nothing
	logger    *slog.Logger
}

// startMesh brings up the node of the wg-quick file at wgPath and loads
// the policy at policyPath, which must name it, for a command that
// reloads both on SIGHUP (serve, recorder): each file's bytes are read
// once, and their digests are what the first reload compares with. The
// caller sets srv, check and recheck, and closes the node.
func startMesh(wgPath, policyPath string, logger *slog.Logger) (*meshReload, error) {
	wgData, err := os.ReadFile(wgPath)
	if err != nil {
		return nil, fmt.Errorf("netstack: %w", err)
	}
	wgSum := digestWG(wgData)
	cfg, warnings, err := netstack.ParseConfigBytes(wgData, wgPath)
	if err != nil {
		return nil, err
	}
	// The start-up's peak RSS is the garbage of each step beside what
	// the next one builds (with 100,000 peers: the 10 MB file and the
	// parser's indexes beside the node's records, then the parsed peers
	// beside the policy's): collected between the steps, the peak is
	// about 5 MB (a tenth of the idle RSS) lower, for a collection of
	// what is live, some 10 ms each. A small file's garbage is less than
	// what the collections themselves leave resident (about 1 MiB more
	// idle RSS at 501 peers).
	large := len(wgData) >= startupCollectSize
	wgData = nil
	if large {
		runtime.GC()
	}
	for _, w := range warnings {
		logger.Warn("wg-quick file: "+w, "file", wgPath)
	}
	if w := othersCanRead(wgPath); w != "" {
		logger.Warn("wg-quick file: "+w, "file", wgPath)
	}
	// The node first: then the parsed peers (13 MB with 100,000) are
	// garbage before the policy is read, rather than beside it. It
	// listens on nothing until the policy is in.
	cfg.Logger = logger
	node, err := netstack.New(cfg)
	if err != nil {
		return nil, err
	}
	cfg.Peers = nil // the node holds its own copy
	if large {
		runtime.GC()
	}
	doc, err := loadPolicy(policyPath, node.PublicKey())
	if err != nil {
		node.Close()
		return nil, err
	}
	pol := &reloadable{}
	pol.doc.Store(doc)
	return &meshReload{wgPath: wgPath, policyPath: policyPath, started: interfaceOf(cfg), wgSum: wgSum, policySum: doc.Sum(),
		node: node, pol: pol, logger: logger}, nil
}

// startupCollectSize is the size of a wg-quick file (about 10,000 peers)
// from which startMesh collects between its steps.
const startupCollectSize = 1 << 20

// reload applies the files as they are now and reports whether it did.
func (r *meshReload) reload() bool {
	// The wg-quick file is read whole only when it changed (a 100,000-peer
	// file is about 10 MB): first its digest, streamed.
	wgSum, wgNames, err := scanWGFile(r.wgPath)
	if err != nil {
		err = fmt.Errorf("netstack: %w", err)
	}
	var update *netstack.ConfigUpdate
	// An Endpoint given by host name is resolved on every reload, as
	// before: such a file is always read again (and its sections naming
	// hosts parsed again).
	peersChanged := wgSum != r.wgSum || wgNames
	if err == nil && peersChanged {
		var wgData []byte
		if wgData, err = os.ReadFile(r.wgPath); err != nil {
			err = fmt.Errorf("netstack: %w", err)
		} else {
			// The bytes parsed are the ones a later reload compares with,
			// even if the file changed since it was scanned.
			wgSum = digestWG(wgData)
			// Only the [Peer] sections that changed are parsed.
			update, err = r.node.ParseUpdate(wgData, r.wgPath)
		}
		if err == nil {
			err = r.sameInterface(update.Config)
		}
		if err == nil {
			for _, w := range update.Warnings {
				r.logger.Warn("wg-quick file: "+w, "file", r.wgPath)
			}
		}
	}
	doc := r.pol.doc.Load()
	var policySum [sha256.Size]byte
	if err == nil {
		// Nodes whose bytes did not change are neither kept in memory
		// nor compiled again (see policy.ReadFile and
		// Document.ReparseFile): a reload that changes a rule costs what
		// the rules cost. The wg-quick file's bytes are garbage by now.
		// A zero Sum: ReadFile cannot tell without parsing.
		var pf *policy.File
		if pf, err = policy.ReadFile(r.policyPath, doc); err == nil {
			policySum = pf.Sum
			if pf.Sum == ([sha256.Size]byte{}) || pf.Sum != r.policySum {
				if doc, err = reparsePolicyFile(doc, pf, r.policyPath, r.node.PublicKey()); err == nil {
					policySum = doc.Sum() // the bytes parsed (see ReparseFile)
				}
			}
		}
	}
	if err == nil && r.check != nil {
		if err = r.check(doc); err != nil {
			err = fmt.Errorf("%s: %w", r.policyPath, err)
		}
	}
	if err == nil {
		var changes netstack.PeerChanges
		if peersChanged {
			changes, err = r.node.ApplyUpdate(update)
		}
		if err == nil {
			r.pol.doc.Store(doc)
			r.wgSum, r.policySum = wgSum, policySum
			r.applied(changes)
			return true
		}
		err = fmt.Errorf("%s: %w", r.wgPath, err)
	}
	// After a failure the next reload parses and applies both files again,
	// whatever their bytes: a revert to the files last applied must reach
	// the node too (a failed UpdatePeers may have left it in flux).
	r.wgSum, r.policySum = wgDigest{}, [sha256.Size]byte{}
	var args []any
	var ce *netstack.ConfigError
	var pe *policy.Error
	switch {
	case errors.As(err, &ce):
		args = append(args, "file", ce.File, "line", ce.Line)
	case errors.As(err, &pe):
		args = append(args, "file", pe.File, "line", pe.Line)
	}
	args = append(args, "err", err)
	r.logger.Error("reload failed; the previous peers and policy stay in force", args...)
	return false
}

// onHangup reloads r on every SIGHUP (telling systemd) until the returned
// stop is called.
func onHangup(logger *slog.Logger, r *meshReload) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			notify(logger, sdReloading())
			r.reload()
			notify(logger, "READY=1")
		}
	}()
	return func() { signal.Stop(hup) }
}

// applied re-evaluates open conns under the new policy, ends the conns of
// the peers that left and logs what changed.
func (r *meshReload) applied(ch netstack.PeerChanges) {
	for _, k := range ch.Added {
		r.logger.Info("peer added", "peer", k.String())
	}
	for _, k := range ch.Changed {
		r.logger.Info("peer changed", "peer", k.String())
	}
	ended := 0
	if r.srv != nil {
		for _, k := range ch.Removed {
			// The server's peer watcher would find these too; this is at once.
			ended += r.srv.ClosePeer(k, "peer removed from the mesh")
		}
		if n := r.srv.SetPolicy(r.pol); n > 0 {
			r.logger.Info("policy reload ended conns it no longer allows", "conns", n)
		}
	}
	if r.recheck != nil {
		if n := r.recheck(); n > 0 {
			r.logger.Info("reload ended streams it no longer allows", "streams", n)
			ended += n
		}
	}
	r.logger.Info("reloaded", "wg", r.wgPath, "policy", r.policyPath,
		"peers", r.node.NumPeers(), "added", len(ch.Added), "removed", len(ch.Removed), "changed", len(ch.Changed), "conns_ended", ended)
}

// wgDigest identifies the bytes of a wg-quick file: a digest keyed with a
// seed made when the process starts, and the length. The zero value
// matches no file. It is as strong as what decides which [Peer] sections
// of a changed file are parsed (netstack's section digests, made the same
// way): whoever writes the file decides the peers anyway, and a collision
// (chance 2^-64, the key unknown outside the process) would keep the
// peers as they are. SHA-256 was a third of a one-peer reload's CPU at
// 100,000 peers; this is a seventh of its cost.
type wgDigest struct {
	h  uint64
	n  int64
	ok bool
}

var wgSeed = maphash.MakeSeed()

// digestWG is the wgDigest of data.
func digestWG(data []byte) wgDigest {
	return wgDigest{maphash.Bytes(wgSeed, data), int64(len(data)), true}
}

// wgHash streams bytes into a wgDigest.
type wgHash struct {
	h maphash.Hash
	n int64
}

func newWGHash() *wgHash {
	w := &wgHash{}
	w.h.SetSeed(wgSeed)
	return w
}

func (w *wgHash) Write(b []byte) (int, error) {
	w.n += int64(len(b))
	return w.h.Write(b)
}

func (w *wgHash) digest() wgDigest { return wgDigest{w.h.Sum64(), w.n, true} }

// scanWGFile reads the wg-quick file at path through, without holding it:
// the digest of its bytes, and whether it names an Endpoint by host name
// (see hasEndpointNames; a line longer than the reader's buffer counts as
// one, so that the file is parsed).
func scanWGFile(path string) (sum wgDigest, names bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return sum, false, err
	}
	defer f.Close()
	h := newWGHash()
	br := bufio.NewReaderSize(io.TeeReader(f, h), 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull:
			names = true
		case err == nil || err == io.EOF:
			names = names || hasEndpointNames(line)
		}
		if err == io.EOF {
			break
		}
		if err != nil && err != bufio.ErrBufferFull {
			return sum, false, err
		}
	}
	return h.digest(), names, nil
}

// hasEndpointNames reports whether a wg-quick file names an Endpoint by
// host name rather than by IP address.
func hasEndpointNames(data []byte) bool {
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte("\n"))
		// Most lines are no Endpoint: a key that is "endpoint" once
		// trimmed starts with an e.
		if line = bytes.TrimLeftFunc(line, unicode.IsSpace); len(line) == 0 || line[0]|0x20 != 'e' {
			continue
		}
		line, _, _ = bytes.Cut(line, []byte("#"))
		k, v, ok := bytes.Cut(line, []byte("="))
		if !ok || !strings.EqualFold(string(bytes.TrimSpace(k)), "endpoint") {
			continue
		}
		if _, err := netip.ParseAddrPort(string(bytes.TrimSpace(v))); err != nil {
			return true
		}
	}
	return false
}

// interfaceOf returns what sameInterface compares of cfg, the node's
// [Interface]: a meshReload keeps only that (with 100,000 peers, the
// parsed peers, about 13 MB, and their section digests are the node's
// business).
func interfaceOf(cfg netstack.Config) netstack.Config {
	return netstack.Config{PrivateKey: cfg.PrivateKey, Addresses: cfg.Addresses, ListenPort: cfg.ListenPort, MTU: cfg.MTU}
}

// sameInterface refuses a file whose [Interface] differs from the one the
// node runs with: the node's key, addresses, UDP socket and MTU are fixed
// for its life, so such a change needs a restart.
func (r *meshReload) sameInterface(cfg netstack.Config) error {
	key := ""
	switch {
	case cfg.PrivateKey != r.started.PrivateKey:
		key = "PrivateKey"
	case !slices.Equal(cfg.Addresses, r.started.Addresses):
		key = "Address"
	case cfg.ListenPort != r.started.ListenPort:
		key = "ListenPort"
	case cfg.MTU != r.started.MTU:
		key = "MTU"
	default:
		return nil
	}
	return &netstack.ConfigError{File: r.wgPath, Line: keyLine(r.wgPath, key), Key: key,
		Err: fmt.Errorf("changed; the running node cannot take it live: restart %s to apply it", r.program())}
}

// program is the command whose node reloads, for messages.
func (r *meshReload) program() string {
	if r.srv == nil {
		return "sshmesh recorder"
	}
	return "sshmesh serve"
}

// keyLine returns the line of the first key named key in path, or 0.
func keyLine(path, key string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		k, _, ok := strings.Cut(line, "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), key) {
			return n
		}
	}
	return 0
}

// loadPolicy loads the policy at path, which must name this node.
func loadPolicy(path string, self meshkey.Public) (*policy.Document, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return parsePolicy(data, path, self)
}

// parsePolicy parses the policy file path holds data, which must name
// this node.
func parsePolicy(data []byte, path string, self meshkey.Public) (*policy.Document, error) {
	return reparsePolicy(nil, data, path, self)
}

// reparsePolicy is parsePolicy for a new version of the file that prev
// (nil: none) was parsed from: what did not change is not compiled again.
func reparsePolicy(prev *policy.Document, data []byte, path string, self meshkey.Public) (*policy.Document, error) {
	doc, err := prev.Reparse(data, path)
	return namesSelf(doc, err, path, self)
}

// reparsePolicyFile is reparsePolicy for the file as policy.ReadFile read
// it for prev.
func reparsePolicyFile(prev *policy.Document, f *policy.File, path string, self meshkey.Public) (*policy.Document, error) {
	doc, err := prev.ReparseFile(f)
	return namesSelf(doc, err, path, self)
}

// namesSelf returns doc, parsed from path with err, if that is nil and
// doc names this node.
func namesSelf(doc *policy.Document, err error, path string, self meshkey.Public) (*policy.Document, error) {
	if err != nil {
		return nil, err
	}
	if _, ok := doc.Node(self); !ok {
		return nil, fmt.Errorf("%s: this node's key %s is not among the policy's nodes; add it under \"nodes\" so rules can name it", path, self)
	}
	return doc, nil
}
