package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkg/sftp"

	"github.com/sshmesh/sshmesh/examples/internal/exampletest"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// The stock sftp client reaches the server through `sshmesh nc`, built
// once per run.
var sshmeshBin string

func TestMain(m *testing.M) { exampletest.MainWithSSHMesh(m, &sshmeshBin) }

// TestSFTPD runs the server with the policy.hujson of this directory (its
// keys swapped for the test mesh's) and drives it with the stock sftp
// client: alice puts, gets, lists, renames and removes in her node's
// directory; nothing outside it (.., absolute paths, symlinks pointing
// out) can be read, and making symlinks is refused; bob sees none of
// alice's files; a shell is refused.
func TestSFTPD(t *testing.T) {
	sftpBin := sshmeshtest.NeedBinary(t, "sftp", "openssh-client")
	sshBin := sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	dir := t.TempDir()
	m := sshmeshtest.NewMesh(t, 3)
	confs := exampletest.WGQuickFiles(t, m, dir, "files.conf", "alice.conf", "bob.conf")
	polPath := exampletest.Policy(t, "policy.hujson", dir, m.Nodes...)
	rootDir := filepath.Join(dir, "files")
	secret := []byte("outside the root\n")
	for _, d := range []string{rootDir, filepath.Join(dir, "alice"), filepath.Join(dir, "bob")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "secret.txt"), secret, 0o600); err != nil {
		t.Fatal(err)
	}
	log := exampletest.Run(t, "sftpd serving", func(ctx context.Context, logger *slog.Logger) error {
		return run(ctx, options{wgPath: confs[0], policyPath: polPath, rootDir: rootDir, stateDir: dir}, logger)
	})

	// sftp runs a batch in the local directory dir/who; a line starting
	// with "-" may fail without ending the batch.
	sftp := func(conf, who, batch string) (string, error) {
		t.Helper()
		local := filepath.Join(dir, who)
		batchFile := filepath.Join(dir, who+".batch")
		if err := os.WriteFile(batchFile, []byte(batch), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sftpBin, append(exampletest.SSHOptions(sshmeshBin, conf), "-b", batchFile, "sftp@100.64.0.1")...)
		cmd.Dir = local
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }
	// listing returns what a batch printed for its command cmd.
	listing := func(out, cmd string) string {
		_, l, _ := strings.Cut(out, "sftp> "+cmd+"\n")
		l, _, _ = strings.Cut(l, "sftp> ")
		return l
	}

	// A file of several SFTP packets, so that reads and writes at offsets count.
	data := make([]byte, 300_000)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "alice", "data.bin"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := sftp(confs[1], "alice", `put data.bin
mkdir sub
rename data.bin sub/moved.bin
ls -1 sub
get sub/moved.bin back.bin
put back.bin gone.bin
rm gone.bin
mkdir empty
rmdir empty
ls -1a /..
`)
	if err != nil {
		t.Fatalf("sftp as alice: %v\n%s", err, out)
	}
	home := filepath.Join(rootDir, "alice-laptop")
	if back, err := os.ReadFile(filepath.Join(dir, "alice", "back.bin")); err != nil || !bytes.Equal(back, data) {
		t.Errorf("get: %d bytes, %v; want the %d bytes put", len(back), err, len(data))
	}
	if !exists(filepath.Join(home, "sub", "moved.bin")) || exists(filepath.Join(home, "data.bin")) ||
		exists(filepath.Join(home, "gone.bin")) || exists(filepath.Join(home, "empty")) {
		t.Errorf("after rename, rm and rmdir, alice's directory holds the wrong files")
	}
	if l := listing(out, "ls -1 sub"); l != "sub/moved.bin\n" {
		t.Errorf("ls sub: %q; want sub/moved.bin", l)
	}
	// "/.." is "/": alice's directory, not the root with every node's.
	if l := listing(out, "ls -1a /.."); l != "/../sub\n" {
		t.Errorf("ls /..: %q; want alice's directory", l)
	}

	// Symlinks someone made on the host, pointing out of alice's directory.
	for name, target := range map[string]string{"rel": "../../secret.txt", "abs": filepath.Join(dir, "secret.txt"), "up": ".."} {
		if err := os.Symlink(target, filepath.Join(home, name)); err != nil {
			t.Fatal(err)
		}
	}
	out, _ = sftp(confs[1], "alice", `-get ../../secret.txt s1
-get /../../secret.txt s2
-get rel s3
-get abs s4
-get up/alice-laptop/sub/moved.bin s5
-ls up
-symlink /etc/passwd passwd
-ln sub/moved.bin hard
`)
	for _, s := range []string{"s1", "s2", "s3", "s4", "s5"} {
		if exists(filepath.Join(dir, "alice", s)) {
			t.Errorf("got %s from outside alice's directory", s)
		}
	}
	if exists(filepath.Join(home, "passwd")) || exists(filepath.Join(home, "hard")) {
		t.Errorf("a symlink or hard link was made")
	}
	if n := strings.Count(out, "sftp> "); n != 8 {
		t.Errorf("ran %d of the 8 commands that must fail:\n%s", n, out)
	}
	if n := strings.Count(log.String(), "sftp refused"); n < 7 {
		t.Errorf("%d refusals logged; want one for each of the 7 that reached the server", n)
	}

	// bob's directory is his own: alice's files are out of reach.
	out, err = sftp(confs[2], "bob", "ls -1a /\n-get /../alice-laptop/sub/moved.bin stolen\n")
	if err != nil || listing(out, "ls -1a /") != "" || exists(filepath.Join(dir, "bob", "stolen")) {
		t.Errorf("sftp as bob: %v; saw or got alice's files:\n%s", err, out)
	}

	// Nothing but SFTP: a command is refused.
	cmdOut, err := exec.Command(sshBin, append(exampletest.SSHOptions(sshmeshBin, confs[1]), "sftp@100.64.0.1", "id")...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(cmdOut), "serves only SFTP") {
		t.Errorf("ssh sftp@ id: %v, %q; want exit 1 and the refusal", err, cmdOut)
	}
	if !strings.Contains(log.String(), "node=alice-laptop") {
		t.Errorf("the log does not name the caller's node")
	}
}

// TestFilesConfined calls each handler with paths through symlinks that
// point out of the root: the stock client stats a path before it opens
// one, so this reaches the handlers it would not.
func TestFilesConfined(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"rel": "../secret.txt", "abs": filepath.Join(dir, "secret.txt"), "up": ".."} {
		if err := os.Symlink(target, filepath.Join(home, name)); err != nil {
			t.Fatal(err)
		}
	}
	root, err := os.OpenRoot(home)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var log sshmeshtest.Buffer
	h := &files{root: root, log: slog.New(slog.NewTextHandler(&log, nil))}
	call := map[string]func(r *sftp.Request) error{
		"Get":  func(r *sftp.Request) error { _, err := h.Fileread(r); return err },
		"Put":  func(r *sftp.Request) error { _, err := h.Filewrite(r); return err },
		"List": func(r *sftp.Request) error { _, err := h.Filelist(r); return err },
		"Stat": func(r *sftp.Request) error { _, err := h.Filelist(r); return err },
	}
	// A link as the last element is followed, except by Remove and Rename,
	// which act on the link itself (inside the root); one in the middle
	// (up/...) always is.
	for _, method := range []string{"Get", "Put", "List", "Stat", "Setstat", "Mkdir", "Remove", "Rename", "Symlink", "Readlink"} {
		paths := []string{"/up/secret.txt", "/up/new"}
		if method != "Remove" && method != "Rename" {
			paths = append(paths, "/rel", "/abs")
		}
		for _, p := range paths {
			r := sftp.NewRequest(method, p)
			r.Target = "/up/moved"
			r.Flags = 0x1a // Put: write, create, truncate
			if method == "Setstat" {
				r.Flags, r.Attrs = 0x4, []byte{0, 0, 0o7, 0o377} // permissions 0777
			}
			f := call[method]
			if f == nil {
				f = h.Filecmd
			}
			if err := f(r); err == nil {
				t.Errorf("%s %s: no error", method, p)
			}
		}
	}
	r := sftp.NewRequest("Rename", "/rel") // the link itself, out of the root
	r.Target = "/up/moved"
	if err := h.Filecmd(r); err == nil {
		t.Errorf("Rename /rel /up/moved: no error")
	}
	if got, err := os.ReadFile(filepath.Join(dir, "secret.txt")); err != nil || string(got) != "secret" {
		t.Errorf("secret.txt: %q, %v; want it untouched", got, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "secret.txt")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret.txt's mode changed")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("%d entries beside home; want only secret.txt", len(ents)-1)
	}
}
