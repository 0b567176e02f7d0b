// Command sftpd is an appliance that serves files over SFTP from one
// directory, inside the process: github.com/pkg/sftp answers the "sftp"
// subsystem from Go code, so the machine needs no OS users and no
// sftp-server, and callers get nothing but SFTP (no shell, no command).
//
//	sftpd --wg node.conf --policy policy.hujson --root DIR [--state DIR]
//
// The policy decides who may log in (see policy.hujson in this directory:
// the login name is "sftp"). Each caller gets its own directory under
// DIR, named for its node in the policy (DIR/alice-laptop, made on first
// login), and sees it as "/": one node cannot read or change another's
// files, and a node the policy does not name is refused. Every path is
// resolved inside that directory by os.Root, so "..", absolute paths and
// symlinks that point out of it cannot leave it, by construction; making
// symlinks and hard links is refused, and Setstat changes only the mode
// and times. Every change, and every refusal, is logged with the caller.
//
// From a node of the mesh, with OpenSSH's sftp:
//
//	sftp -o ProxyCommand='sshmesh nc --wg laptop.conf %h %p' sftp@100.64.0.1
//
// Copy this file to serve files from your own device.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
)

type options struct {
	wgPath, policyPath, rootDir, stateDir string
}

func main() {
	var o options
	flag.StringVar(&o.wgPath, "wg", "", "wg-quick `file` of this node (required)")
	flag.StringVar(&o.policyPath, "policy", "", "policy `file` saying who may log in (required)")
	flag.StringVar(&o.rootDir, "root", "", "`dir` holding a directory for each caller's node (required)")
	flag.StringVar(&o.stateDir, "state", ".", "`dir` for the SSH host key")
	flag.Parse()
	if o.wgPath == "" || o.policyPath == "" || o.rootDir == "" {
		flag.Usage()
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, o, logger); err != nil {
		logger.Error("sftpd failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, logger *slog.Logger) error {
	root, err := os.OpenRoot(o.rootDir)
	if err != nil {
		return err
	}
	defer root.Close()
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
	srv := &sshmesh.Server{
		Policy:     doc,
		HostKeys:   []ssh.Signer{hostKey},
		Logger:     logger,
		Subsystems: map[string]sshmesh.Handler{"sftp": &sftpd{root: root, logger: logger}},
		// Anything but the sftp subsystem (a shell, a command) is refused:
		// a nil Handler would run login shells as the mapped local user.
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
			fmt.Fprintln(s.Stderr(), "this server serves only SFTP")
			s.Exit(1)
		}),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("sftpd serving", "addrs", fmt.Sprint(node.Addresses()), "root", o.rootDir,
		"known_hosts", sshmesh.KnownHostsLine(hostKey.PublicKey(), 22, node.Addresses()...))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx) // ends each session's Context: its SFTP server closes
	if err := <-errc; !errors.Is(err, sshmesh.ErrServerClosed) {
		return err
	}
	return nil
}

// sftpd serves the "sftp" subsystem of a session from the caller's
// directory under root.
type sftpd struct {
	root   *os.Root
	logger *slog.Logger
}

func (d *sftpd) ServeSSH(s *sshmesh.Session) {
	id := s.Identity()
	log := d.logger.With("peer", id.Key.String(), "node", id.Node, "owner", id.Owner, "session", s.ID())
	name := id.Node
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		log.Warn("sftp refused: the policy gives the node no name usable as a directory")
		fmt.Fprintln(s.Stderr(), "sftpd: the policy must name your node")
		s.Exit(1)
		return
	}
	if err := d.root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		log.Error("sftp: making the node's directory", "err", err)
		s.Exit(1)
		return
	}
	home, err := d.root.OpenRoot(name)
	if err != nil {
		log.Error("sftp: opening the node's directory", "err", err)
		s.Exit(1)
		return
	}
	defer home.Close()

	h := &files{root: home, log: log}
	srv := sftp.NewRequestServer(session{s}, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h})
	stop := context.AfterFunc(s.Context(), func() { srv.Close() }) // Shutdown, or the client left
	defer stop()
	log.Info("sftp start", "dir", name)
	if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
		log.Warn("sftp ended", "err", err)
	}
	s.Exit(0)
}

// session gives the SFTP server the Close it needs: ending the session.
type session struct{ *sshmesh.Session }

func (s session) Close() error { return s.Exit(0) }

// files are the SFTP handlers of one session, confined to root.
type files struct {
	root *os.Root
	log  *slog.Logger
}

// rel turns a request's path (the server cleans it to an absolute path,
// "/" being root) into one relative to root.
func rel(p string) string {
	if r := strings.TrimPrefix(path.Clean("/"+p), "/"); r != "" {
		return r
	}
	return "."
}

// logged logs a request that changes something or was refused (a missing
// file only at debug level: clients look for files before writing them),
// and returns err.
func (h *files) logged(r *sftp.Request, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		h.log.Debug("sftp: no such file", "op", r.Method, "path", r.Filepath, "err", err)
	case err != nil:
		h.log.Warn("sftp refused", "op", r.Method, "path", r.Filepath, "target", r.Target, "err", err)
	case r.Method != "Get" && r.Method != "List" && r.Method != "Stat":
		h.log.Info("sftp", "op", r.Method, "path", r.Filepath, "target", r.Target)
	}
	return err
}

func (h *files) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	f, err := h.root.Open(rel(r.Filepath))
	return f, h.logged(r, err)
}

func (h *files) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	flags, pf := os.O_WRONLY, r.Pflags()
	if pf.Creat {
		flags |= os.O_CREATE
	}
	if pf.Trunc {
		flags |= os.O_TRUNC
	}
	if pf.Excl {
		flags |= os.O_EXCL
	}
	f, err := h.root.OpenFile(rel(r.Filepath), flags, 0o644)
	return f, h.logged(r, err)
}

func (h *files) Filecmd(r *sftp.Request) error {
	p := rel(r.Filepath)
	var err error
	switch r.Method {
	case "Rename", "PosixRename":
		err = h.root.Rename(p, rel(r.Target))
	case "Remove", "Rmdir":
		err = h.root.Remove(p)
	case "Mkdir":
		err = h.root.Mkdir(p, 0o755)
	case "Setstat":
		a, set := r.Attributes(), r.AttrFlags()
		if a == nil { // attributes the flags promise are missing
			return h.logged(r, sftp.ErrSSHFxBadMessage)
		}
		if set.Permissions {
			err = h.root.Chmod(p, a.FileMode().Perm())
		}
		if set.Acmodtime && err == nil {
			err = h.root.Chtimes(p, time.Unix(int64(a.Atime), 0), time.Unix(int64(a.Mtime), 0))
		}
	default: // Symlink, Link, StatVFS
		err = sftp.ErrSSHFxOpUnsupported
	}
	return h.logged(r, err)
}

func (h *files) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	var fis listerAt
	var err error
	switch r.Method {
	case "List":
		var entries []fs.DirEntry
		if entries, err = fs.ReadDir(h.root.FS(), rel(r.Filepath)); err == nil {
			for _, e := range entries {
				fi, ierr := e.Info()
				if ierr == nil {
					fis = append(fis, fi)
				}
			}
		}
	case "Stat":
		var fi fs.FileInfo
		if fi, err = h.root.Stat(rel(r.Filepath)); err == nil {
			fis = listerAt{fi}
		}
	default: // Readlink: a link's target is not the caller's business
		err = sftp.ErrSSHFxOpUnsupported
	}
	return fis, h.logged(r, err)
}

// listerAt lists file infos to the SFTP server.
type listerAt []fs.FileInfo

func (l listerAt) ListAt(dst []fs.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(dst, l[off:])
	if n < len(dst) {
		return n, io.EOF
	}
	return n, nil
}
