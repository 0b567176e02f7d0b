package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sshmesh/sshmesh/internal/memlimit"
	"github.com/sshmesh/sshmesh/tailnet"
)

// joinFlags are the flags every command of this program shares: how the
// node joins its tailnet, its log and its memory.
type joinFlags struct {
	controlURL, authKeyFile, stateDir, hostname, tags *string
	ephemeral, uploadLogs                             *bool
	logFormat, memLimit                               *string
}

// addJoinFlags declares the shared flags on fs; program names the default
// state directory (sshmesh-tailnet, sshmesh-tailnet-recorder).
func addJoinFlags(fs *flag.FlagSet, program string) *joinFlags {
	fs.Bool("tailnet", true, "on a tailnet: the only mode of this program, accepted as given to sshmesh serve --tailnet and sshmesh recorder --tailnet")
	return &joinFlags{
		controlURL:  fs.String("control-url", "", "the coordinator's `URL` (headscale); empty means Tailscale's control plane"),
		authKeyFile: fs.String("auth-key-file", "", "`file` holding the auth key (or set TS_AUTHKEY); needed only for the first login"),
		stateDir:    fs.String("state", defaultStateDir(program), "`dir` for the node's tailnet state (and serve's host key and check approvals)"),
		hostname:    fs.String("hostname", "", "the node's `name` on the tailnet (default: the host's)"),
		tags:        fs.String("tags", "", "comma-separated `tags` the node advertises (tag:server); the coordinator must allow them"),
		ephemeral:   fs.Bool("ephemeral", false, "an ephemeral node: the coordinator forgets it once it is offline"),
		logFormat:   fs.String("log-format", "text", "log format: text or json"),
		memLimit:    fs.String("memory-limit", "auto", memlimit.Usage),
		uploadLogs:  fs.Bool("upload-logs", false, "let tsnet upload its logs to Tailscale's logging service (off: TS_NO_LOGS_NO_SUPPORT)"),
	}
}

// check validates the flags that need no network and returns the logger.
func (j *joinFlags) check(stderr io.Writer) (*slog.Logger, error) {
	var logger *slog.Logger
	switch *j.logFormat {
	case "text":
		logger = slog.New(slog.NewTextHandler(stderr, nil))
	case "json":
		logger = slog.New(slog.NewJSONHandler(stderr, nil))
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", *j.logFormat)
	}
	if err := memlimit.Check(*j.memLimit); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(*j.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("--state: %w", err)
	}
	return logger, nil
}

// state is the state directory (check has created it).
func (j *joinFlags) state() string { return *j.stateDir }

// join brings the node up on its tailnet (waiting at most 5 minutes for
// the coordinator).
func (j *joinFlags) join(ctx context.Context, logger *slog.Logger) (*tailnet.Node, error) {
	var tagList []string
	if *j.tags != "" {
		tagList = strings.Split(*j.tags, ",")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return tailnet.New(ctx, tailnet.Config{
		ControlURL:  *j.controlURL,
		AuthKeyFile: *j.authKeyFile,
		Dir:         filepath.Join(*j.stateDir, "tailnet"),
		Hostname:    *j.hostname,
		Tags:        tagList,
		Ephemeral:   *j.ephemeral,
		UploadLogs:  *j.uploadLogs,
		Logger:      logger,
	})
}

// defaultStateDir is /var/lib/PROGRAM for root, else under the user's
// state directory.
func defaultStateDir(program string) string {
	if os.Geteuid() == 0 {
		return filepath.Join("/var/lib", program)
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, program)
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", program)
	}
	return "." + program
}
