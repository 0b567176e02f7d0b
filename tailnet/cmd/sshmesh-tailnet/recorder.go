package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"

	"github.com/sshmesh/sshmesh/internal/memlimit"
	"github.com/sshmesh/sshmesh/recorder"
)

// runRecorder runs a recorder node on the tailnet: it stores the session
// recordings that sshmesh servers of the tailnet stream to it, and serves
// the page to find and play them. Senders and viewers are named as the
// coordinator names them (WhoIs at accept): tags, logins, node names; no
// policy file is needed, since nothing here is a WireGuard key to name.
func runRecorder(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sshmesh-tailnet recorder", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jf := addJoinFlags(fs, "sshmesh-tailnet-recorder")
	dir := fs.String("dir", "", "`dir` for the recordings, as DIR/NODE/YYYY-MM-DD/SESSION.cast (required)")
	senders := fs.String("senders", "", "comma-separated `list` of who may send recordings: tag:NAME, user logins (alice@example.com), node names, * (required)")
	viewers := fs.String("viewers", "", "comma-separated `list` of who may list and play recordings on the page (tag:NAME, logins, node names); empty: nobody")
	port := fs.Uint("port", recorder.DefaultPort, "stream `port` on the tailnet addresses")
	httpPort := fs.Uint("http-port", 80, "`port` of the page on the tailnet addresses (0: no page)")
	maxStreams := fs.Int("max-streams", recorder.DefaultMaxStreamsPerSender, "most recordings one sending node may stream at `once`")
	maxPerCaller := fs.Int("max-streams-per-caller", recorder.DefaultMaxStreamsPerCaller, "most of one sending node's recordings that may be of one caller at `once`")
	maxMiB := fs.Int64("max-recording-mib", recorder.DefaultMaxRecordingBytes>>20, "largest recording, in `MiB`; a stream over it is refused")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if *dir == "" || *senders == "" || fs.NArg() != 0 || *port == 0 || *port > 65535 || *httpPort > 65535 ||
		*maxStreams <= 0 || *maxPerCaller <= 0 || *maxMiB <= 0 {
		fmt.Fprintln(stderr, usage)
		return errUsage
	}
	for flag, list := range map[string]string{"--senders": *senders, "--viewers": *viewers} {
		if err := checkPrincipals(splitList(list)); err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
	}
	logger, err := jf.check(stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	node, err := jf.join(ctx, logger)
	if err != nil {
		return err
	}
	defer node.Close()
	// No Identify: every conn of a tailnet listener carries its caller's
	// identity from the coordinator, and the recorder names it by that.
	rec := &recorder.Server{Dir: *dir, Senders: splitList(*senders), Viewers: splitList(*viewers),
		Logger: logger, Addrs: node.Addresses(), MaxStreamsPerSender: *maxStreams, MaxStreamsPerCaller: *maxPerCaller, MaxRecordingBytes: *maxMiB << 20}
	defer rec.Close()
	defer memlimit.Set(*jf.memLimit)()
	return rec.ServeNode(ctx, node.Listen, uint16(*port), uint16(*httpPort), func() {
		fmt.Fprintf(stdout, "sshmesh: recorder on the tailnet as %q on %s port %d (page: port %d)\n", *jf.hostname, joinAddrs(node.Addresses()), *port, *httpPort)
		logger.Info("recorder ready", "addrs", node.Addresses(), "port", *port, "http_port", *httpPort, "dir", *dir)
	})
}

// checkPrincipals returns an error for a name the recorder could never
// match: an empty tag, or a group (the recorder has no policy to expand
// it with).
func checkPrincipals(names []string) error {
	for _, n := range names {
		switch {
		case n == "tag:":
			return fmt.Errorf("%q: a tag is tag:NAME", n)
		case strings.HasPrefix(n, "group:") || strings.HasPrefix(n, "autogroup:"):
			return fmt.Errorf("%q: the recorder takes tag:NAME, user logins, node names or *, not groups", n)
		}
	}
	return nil
}

// splitList splits a comma-separated flag value; space around the
// names and empty names are dropped.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
}
