package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/recorder"
)

// cmdRecorder runs a recorder node: it stores the session recordings that
// sshmesh servers stream to it and serves a page to find and play them.
func cmdRecorder(ctx context.Context, args []string, io stdio) (err error) {
	if wantsTailnet(args) {
		return onTailnet(ctx, "recorder", args, io)
	}
	fs := newFlags("recorder", "--wg CONF --policy FILE --dir DIR --senders LIST [--viewers LIST]", io)
	fs.Bool("tailnet", false, "run the recorder as a node of an existing tailnet (headscale or Tailscale) instead: runs sshmesh-tailnet recorder with these arguments (see its --help)")
	wgPath := fs.String("wg", "", "wg-quick `file` of this node (required); its peers are re-read on SIGHUP")
	policyPath := fs.String("policy", "", "policy `file` (HuJSON; required): names the nodes that send and view; re-read with --wg on SIGHUP")
	dir := fs.String("dir", "", "`dir` for the recordings, as DIR/NODE/YYYY-MM-DD/SESSION.cast (required)")
	senders := fs.String("senders", "", "comma-separated `list` of who may send recordings: node names, tag:NAME, owner emails, * (required)")
	viewers := fs.String("viewers", "", "comma-separated `list` of who may list and play recordings on the page (node names, tag:NAME, owner emails); empty: nobody")
	port := fs.Uint("port", recorder.DefaultPort, "stream `port` on the mesh addresses")
	maxStreams := fs.Int("max-streams", recorder.DefaultMaxStreamsPerSender, "most recordings one sending node may stream at `once`")
	maxPerCaller := fs.Int("max-streams-per-caller", recorder.DefaultMaxStreamsPerCaller, "most of one sending node's recordings that may be of one caller at `once`")
	maxMiB := fs.Int64("max-recording-mib", recorder.DefaultMaxRecordingBytes>>20, "largest recording, in `MiB`; a stream over it is refused")
	httpPort := fs.Uint("http-port", 80, "`port` of the page on the mesh addresses (0: no page)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *wgPath == "" || *policyPath == "" || *dir == "" || *senders == "" || fs.NArg() != 0 || *port == 0 || *port > 65535 || *httpPort > 65535 ||
		*maxStreams <= 0 || *maxPerCaller <= 0 || *maxMiB <= 0 || *maxMiB > 1<<40 {
		fs.Usage()
		return errUsage
	}
	logger, err := newLogger(*logFormat, io)
	if err != nil {
		return err
	}
	rl, err := startMesh(*wgPath, *policyPath, logger)
	if err != nil {
		return err
	}
	node, doc, pol := rl.node, rl.pol.doc.Load(), rl.pol
	defer node.Close()
	checkLists := func(doc *policy.Document) error {
		for flag, list := range map[string]string{"--senders": *senders, "--viewers": *viewers} {
			if err := checkPrincipals(doc, splitList(list)); err != nil {
				return fmt.Errorf("%s: %w", flag, err)
			}
		}
		return nil
	}
	if err := checkLists(doc); err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	rec := &recorder.Server{Dir: *dir, Identify: pol.Node, Senders: splitList(*senders), Viewers: splitList(*viewers),
		Logger: logger, Addrs: node.Addresses(), MaxStreamsPerSender: *maxStreams, MaxStreamsPerCaller: *maxPerCaller, MaxRecordingBytes: int64(*maxMiB) << 20}
	defer rec.Close()

	// SIGHUP re-reads the policy (who is who: senders and viewers are
	// matched against it) and the wg-quick file's peers, as serve does;
	// the streams of senders they no longer allow end.
	rl.check, rl.recheck = checkLists, rec.Recheck
	stopReload := onHangup(logger, rl)
	defer stopReload()
	err = rec.ServeNode(ctx, node.Listen, uint16(*port), uint16(*httpPort), func() {
		id, _ := doc.Node(node.PublicKey())
		logger.Info("recorder ready", "node", id.Name(), "addrs", node.Addresses(), "port", *port, "http_port", *httpPort, "dir", *dir)
		notify(logger, "READY=1")
	})
	if err != nil {
		return err
	}
	notify(logger, "STOPPING=1")
	return nil
}

// checkPrincipals returns an error for a name that is "*" or names a node
// of doc (by name, tag or owner) for none of them: a typo would silently
// refuse.
func checkPrincipals(doc *policy.Document, names []string) error {
	var nodes []policy.Identity // built once, if a name needs them (100,000 nodes: 8.8 MB)
	for _, n := range names {
		found := n == "*"
		if !found && nodes == nil {
			nodes = doc.Nodes()
		}
		for _, id := range nodes {
			if found {
				break
			}
			found = id.Node == n || slices.Contains(id.Tags, n) || id.Owner != "" && strings.EqualFold(id.Owner, n)
		}
		if !found {
			return fmt.Errorf("%q names no node of the policy (want a node name, tag:NAME, an owner's email or *)", n)
		}
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
