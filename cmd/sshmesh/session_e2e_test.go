package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// These tests log in with the stock OpenSSH tools (ssh, scp, sftp, rsync,
// git) through `sshmesh nc` to a Server with the default LoginHandler, which
// runs real sessions as a real local user the test creates: issue 6, end to
// end. They need root (useradd, switching users).

// loginUser is a local account made for one test, with one supplementary
// group.
type loginUser struct {
	*testkit.User
	ID string // `id NAME`, what `id` run as the user must print
}

// newLoginUser creates a user with a home, bash and a supplementary group,
// and removes both at the end of the test.
func newLoginUser(t *testing.T) *loginUser {
	t.Helper()
	u := &loginUser{User: testkit.NewUser(t, testkit.UserOptions{Group: true})}
	u.ID = strings.TrimSpace(mustRun(t, "id", u.Name))
	return u
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// meshSSHOptions are the ssh options that reach the mesh through
// `sshmesh nc --wg conf`. ssh, scp and sftp take them as they are; see
// meshSSHCommand for rsync -e and GIT_SSH_COMMAND.
func meshSSHOptions(conf string) []string {
	return append(append(meshClientOptions(conf), noAgent...), "-o", "LogLevel=ERROR")
}

// meshSSHCommand is `ssh` with meshSSHOptions as one shell-quoted command
// line, for rsync -e and GIT_SSH_COMMAND.
func meshSSHCommand(conf string) string {
	args := []string{"ssh"}
	for _, o := range meshSSHOptions(conf) {
		args = append(args, "'"+strings.ReplaceAll(o, "'", `'\''`)+"'")
	}
	return strings.Join(args, " ")
}

// tool is one run of a client program.
type tool struct {
	env   []string // added to the test's environment
	dir   string
	stdin io.Reader
}

// run runs name with args and returns its output and exit code, failing
// the test when it cannot be run or takes over a minute.
func (o tool) run(t *testing.T, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), o.env...)
	cmd.Dir, cmd.Stdin = o.dir, o.stdin
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %q: timed out; stderr %q", name, args, se.String())
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	}
	return so.String(), se.String(), code
}

// mustOK is run that fails the test unless the program exits 0.
func (o tool) mustOK(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, errOut, code := o.run(t, name, args...)
	if code != 0 {
		t.Fatalf("%s %q: exit %d\nstdout: %s\nstderr: %s", filepath.Base(name), args, code, out, errOut)
	}
	return out
}

// loginServer is an in-process Server with the default handler on a mesh
// node, reachable by the stock client through conf.
type loginServer struct {
	srv      *sshmesh.Server
	server   *sshmeshtest.Node
	goClient *sshmeshtest.Node // an in-process client node for x/crypto
	conf     string            // wg-quick file of the stock client's node
	host     string            // the server's mesh address
	log      *sshmeshtest.Buffer
}

// startLoginServer serves pol with LoginHandler (Handler nil) on node 0 of
// a three-node mesh: node 1 is the stock client's (`sshmesh nc`), node 2
// stays up for x/crypto clients in this process. configure, if given,
// adjusts the Server before it serves.
func startLoginServer(t *testing.T, pol policy.Policy, configure ...func(*sshmesh.Server)) *loginServer {
	t.Helper()
	m := sshmeshtest.NewMesh(t, 3)
	m.Nodes[1].Node.Close() // `sshmesh nc` brings this one up in each ssh
	ls := &loginServer{server: m.Nodes[0], goClient: m.Nodes[2], host: m.Nodes[0].Addr.String(), log: &sshmeshtest.Buffer{}}
	ls.srv = &sshmesh.Server{
		Policy: pol,
		Logger: slog.New(slog.NewTextHandler(ls.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range configure {
		f(ls.srv)
	}
	sshmeshtest.Serve(t, ls.server, ls.srv)
	ls.conf = m.Nodes[1].WriteWGQuick(t, filepath.Join(t.TempDir(), "client.conf"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", ls.log.String())
		}
	})
	return ls
}

// ssh runs the stock ssh client with args after the mesh options.
func (ls *loginServer) ssh(t *testing.T, o tool, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ssh := sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	return o.run(t, ssh, append(meshSSHOptions(ls.conf), args...)...)
}

// e2ePolicy maps the login u.Name to u with acceptEnv LANG, LD_PRELOAD
// (which must still never pass) and SSHMESH_E2E_*, and the login "envless"
// to u with no acceptEnv; everything else is refused.
func e2ePolicy(u *loginUser) policy.Policy {
	return policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
		switch r.User {
		case u.Name:
			return policy.Decision{Action: policy.Accept, LocalUser: u.Name, Rule: "ssh[0]",
				AcceptEnv: []string{"LANG", "LD_PRELOAD", "SSHMESH_E2E_*"}}, nil
		case "envless":
			return policy.Decision{Action: policy.Accept, LocalUser: u.Name, Rule: "ssh[1]"}, nil
		}
		return policy.Decision{}, nil
	})
}

// TestLoginSessionStockClients runs the issue 6 checks through the stock
// OpenSSH client against LoginHandler: identity, capabilities, pty, window
// changes, signals, exit codes, bulk output, environment, and file
// transfer with sftp, scp, rsync and git.
func TestLoginSessionStockClients(t *testing.T) {
	u := newLoginUser(t)
	ls := startLoginServer(t, e2ePolicy(u))
	target := u.Name + "@" + ls.host
	sh := tool{}

	t.Run("id", func(t *testing.T) {
		out := strings.TrimSpace(ls.mustSSH(t, sh, target, "id"))
		if out != u.ID {
			t.Errorf("ssh %s id:\n got %s\nwant %s", u.Name, out, u.ID)
		}
		want := fmt.Sprintf("%d %d %d", u.UID, u.GID, u.GID) // uid, gid, groups: primary + supplementary
		gid := strings.TrimSpace(mustRun(t, "getent", "group", u.Group))
		want += " " + strings.Split(gid, ":")[2]
		if got := strings.Join(strings.Fields(ls.mustSSH(t, sh, target, "echo $(id -u) $(id -g) $(id -G)")), " "); got != want {
			t.Errorf("uid gid groups: got %q, want %q", got, want)
		}
	})

	t.Run("capabilities and fds", func(t *testing.T) {
		out := ls.mustSSH(t, sh, target, "grep ^Cap /proc/self/status; grep ^NoNewPrivs /proc/self/status")
		caps := regexp.MustCompile(`(?m)^(Cap\w+):\s*([0-9a-f]+)$`).FindAllStringSubmatch(out, -1)
		if len(caps) < 4 {
			t.Fatalf("no capability lines in\n%s", out)
		}
		for _, c := range caps {
			if c[1] != "CapBnd" && strings.Trim(c[2], "0") != "" {
				t.Errorf("%s = %s, want 0 for a non-root user", c[1], c[2])
			}
		}
		// bash execs ls; ls itself opens fd 3 for the directory.
		if out := ls.mustSSH(t, sh, target, "ls /proc/self/fd"); out != "0\n1\n2\n3\n" {
			t.Errorf("fds of the child: %q, want 0 1 2 (and ls's 3)", out)
		}
	})

	t.Run("tty", func(t *testing.T) {
		out, errOut, code := ls.ssh(t, sh, "-tt", target, "tty")
		if code != 0 || !regexp.MustCompile(`^/dev/pts/\d+\r\n$`).MatchString(out) {
			t.Errorf("ssh -tt tty: exit %d, stdout %q, stderr %q; want /dev/pts/N", code, out, errOut)
		}
		out, _, _ = ls.ssh(t, sh, target, "tty")
		if out != "not a tty\n" {
			t.Errorf("ssh tty without -tt: %q, want \"not a tty\"", out)
		}
	})

	t.Run("login shell", func(t *testing.T) {
		// With a pty (stdin is not a terminal, so ssh -tt types it in):
		// an interactive login shell, argv0 "-bash", after /etc/motd.
		script := "echo argv0=$0 login_shell=$(shopt -q login_shell && echo yes); exit 3\n"
		out, errOut, code := ls.ssh(t, tool{stdin: strings.NewReader(script)}, "-tt", target)
		if code != 3 || !strings.Contains(out, "argv0=-bash login_shell=yes") {
			t.Errorf("ssh -tt with no command: exit %d, stdout %q, stderr %q; want 3 and a login shell", code, out, errOut)
		}
		motd, _ := os.ReadFile("/etc/motd")
		firstLine := strings.TrimSpace(strings.SplitN(strings.TrimSpace(string(motd)), "\n", 2)[0])
		if firstLine != "" && !strings.Contains(out, firstLine) {
			t.Errorf("no /etc/motd before the login shell: %q", out)
		}
		// Without a pty: still a login shell, reading the script from stdin, no motd.
		out, errOut, code = ls.ssh(t, tool{stdin: strings.NewReader(script)}, target)
		if code != 3 || out != "argv0=-bash login_shell=yes\n" {
			t.Errorf("ssh with no command and no pty: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})

	t.Run("stdin", func(t *testing.T) {
		in := make([]byte, 4<<20)
		rand.Read(in)
		out := ls.mustSSH(t, tool{stdin: bytes.NewReader(in)}, target, "sha256sum")
		if want := fmt.Sprintf("%x  -\n", sha256.Sum256(in)); out != want {
			t.Errorf("4 MiB through stdin: the child read %q, want %q", out, want)
		}
		// EOF on the client's stdin closes the child's.
		if out := ls.mustSSH(t, tool{stdin: strings.NewReader("hello\n")}, target, "cat; echo done"); out != "hello\ndone\n" {
			t.Errorf("cat: %q", out)
		}
	})

	t.Run("window change", func(t *testing.T) { testWindowChange(t, ls, target) })

	t.Run("exit codes", func(t *testing.T) {
		for _, want := range []int{0, 1, 42, 255} {
			out, errOut, code := ls.ssh(t, sh, target, fmt.Sprintf("echo out; echo err >&2; exit %d", want))
			if code != want || out != "out\n" || errOut != "err\n" {
				t.Errorf("exit %d: got exit %d, stdout %q, stderr %q", want, code, out, errOut)
			}
		}
		client := ls.dial(t, u.Name)
		for _, want := range []int{0, 1, 42, 255} {
			s, err := client.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			err = s.Run(fmt.Sprintf("exit %d", want))
			var ee *ssh.ExitError
			switch {
			case want == 0 && err != nil:
				t.Errorf("x/crypto exit 0: %v", err)
			case want != 0 && (!errors.As(err, &ee) || ee.ExitStatus() != want || ee.Signal() != ""):
				t.Errorf("x/crypto exit %d: %v", want, err)
			}
		}
	})

	t.Run("signal", func(t *testing.T) {
		// OpenSSH exits 255 on exit-signal and says so at debug level.
		_, errOut, code := ls.ssh(t, sh, "-v", target, "kill -TERM $$")
		if code != 255 || !strings.Contains(errOut, "rtype exit-signal") {
			t.Errorf("ssh 'kill -TERM $$': exit %d, want 255 and an exit-signal in the debug log:\n%s", code, errOut)
		}
		if !strings.Contains(ls.log.String(), "signal=TERM") {
			t.Errorf("the server did not log the session's end by signal TERM")
		}
		client := ls.dial(t, u.Name)
		s, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var ee *ssh.ExitError
		if err := s.Run("kill -TERM $$"); !errors.As(err, &ee) || ee.Signal() != "TERM" {
			t.Errorf("x/crypto: %v, want exit-signal TERM", err)
		}
		// A signal request from the client reaches the command.
		s, err = client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var out sshmeshtest.Buffer
		s.Stdout = &out
		if err := s.Start("trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.05; done"); err != nil {
			t.Fatal(err)
		}
		out.WaitFor(t, "ready")
		if err := s.Signal(ssh.SIGINT); err != nil {
			t.Fatal(err)
		}
		if err := s.Wait(); !errors.As(err, &ee) || ee.ExitStatus() != 7 || !strings.Contains(out.String(), "got-int") {
			t.Errorf("signal INT: %v, output %q; want exit 7 and got-int", err, out.String())
		}
	})

	t.Run("10 MiB", func(t *testing.T) {
		const size = 10 << 20
		stream := []byte(strings.Repeat("abcdefgh\n", size/9+1)[:size])
		gen := fmt.Sprintf("yes abcdefgh | head -c %d", size)
		check := func(name string, got []byte) {
			t.Helper()
			if sha256.Sum256(got) != sha256.Sum256(stream) {
				i := 0
				for i < len(got) && i < len(stream) && got[i] == stream[i] {
					i++
				}
				t.Errorf("%s: got %d bytes, want %d; first difference at byte %d", name, len(got), len(stream), i)
			}
		}
		out, errOut, code := ls.ssh(t, sh, target, gen)
		if code != 0 {
			t.Errorf("no pty: exit %d, %s", code, errOut)
		}
		check("no pty", []byte(out))
		// With a pty, raw mode: no \n → \r\n.
		out, errOut, code = ls.ssh(t, sh, "-tt", target, "stty raw -echo; "+gen)
		if code != 0 {
			t.Errorf("pty raw: exit %d, %s", code, errOut)
		}
		check("pty raw", []byte(out))
		// With a pty in its default mode, every \n arrives as \r\n (1 MiB:
		// the kernel's output processing is slow, and bulk is checked above).
		out, errOut, code = ls.ssh(t, sh, "-tt", target, "yes abcdefgh | head -c 1048576")
		if want := bytes.ReplaceAll(stream[:1<<20], []byte("\n"), []byte("\r\n")); code != 0 || !bytes.Equal([]byte(out), want) {
			t.Errorf("pty cooked: exit %d, %d bytes, want %d with \\r\\n; stderr %s", code, len(out), len(want), errOut)
		}
	})

	t.Run("environment", func(t *testing.T) {
		t.Setenv("SSHMESH_E2E_SERVER_ONLY", "leak") // the server's env must not reach the child
		o := tool{env: []string{"LANG=C.UTF-8", "SSHMESH_E2E_SENT=yes", "TZ=Etc/UTC"}}
		opts := []string{"-o", "SendEnv=LANG", "-o", "SendEnv=SSHMESH_E2E_SENT", "-o", "SendEnv=TZ",
			"-o", "SetEnv=LD_PRELOAD=/x SSHMESH_E2E_SET=1 BASH_ENV=/x"}
		env := parseEnv(ls.mustSSH(t, o, append(opts, target, "env")...))
		want := map[string]string{
			"LANG": "C.UTF-8", "SSHMESH_E2E_SENT": "yes", "SSHMESH_E2E_SET": "1",
			"HOME": u.Home, "USER": u.Name, "LOGNAME": u.Name, "SHELL": "/bin/bash",
			"PATH": loginDefsPath(), "MAIL": "/var/mail/" + u.Name,
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s = %q, want %q", k, env[k], v)
			}
		}
		for _, k := range []string{"LD_PRELOAD", "BASH_ENV", "TZ", "SSH_TTY", "SSHMESH_E2E_SERVER_ONLY"} {
			if v, ok := env[k]; ok {
				t.Errorf("%s=%q reached the child", k, v)
			}
		}
		if !regexp.MustCompile(`^100\.64\.0\.2 \d+ 100\.64\.0\.1 22$`).MatchString(env["SSH_CONNECTION"]) {
			t.Errorf("SSH_CONNECTION = %q, want the client's and the server's mesh addresses and ports", env["SSH_CONNECTION"])
		}
		if !regexp.MustCompile(`^100\.64\.0\.2 \d+ 22$`).MatchString(env["SSH_CLIENT"]) {
			t.Errorf("SSH_CLIENT = %q, want the client's mesh address, its port and 22", env["SSH_CLIENT"])
		}
		// A rule without acceptEnv passes none of them.
		env = parseEnv(ls.mustSSH(t, o, append(opts, "envless@"+ls.host, "env")...))
		for _, k := range []string{"SSHMESH_E2E_SENT", "SSHMESH_E2E_SET", "LD_PRELOAD"} {
			if v, ok := env[k]; ok {
				t.Errorf("rule without acceptEnv: %s=%q reached the child", k, v)
			}
		}
		if env["USER"] != u.Name {
			t.Errorf("envless: USER = %q", env["USER"])
		}
		// With a pty: SSH_TTY and TERM.
		env = parseEnv(strings.ReplaceAll(ls.mustSSH(t, tool{env: []string{"TERM=xterm-256color"}}, "-tt", target, "env"), "\r\n", "\n"))
		if env["TERM"] != "xterm-256color" || !strings.HasPrefix(env["SSH_TTY"], "/dev/pts/") {
			t.Errorf("with a pty: TERM=%q SSH_TTY=%q", env["TERM"], env["SSH_TTY"])
		}
	})

	t.Run("sftp", func(t *testing.T) {
		sftp := sshmeshtest.NeedBinary(t, "sftp", "openssh-client")
		needSFTPServer(t)
		dir := t.TempDir()
		up := writeRandom(t, filepath.Join(dir, "up.bin"), 3<<20+17)
		batch := filepath.Join(dir, "batch")
		os.WriteFile(batch, []byte("put "+up+" sftp-up.bin\nls -l sftp-up.bin\nget sftp-up.bin "+dir+"/down.bin\n-get /etc/shadow "+dir+"/shadow\n"), 0o600)
		out, errOut, code := sh.run(t, sftp, append(meshSSHOptions(ls.conf), "-b", batch, target)...)
		if code != 0 {
			t.Fatalf("sftp: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
		if !regexp.MustCompile(`(?m)^-\S+\s+\S+\s+` + regexp.QuoteMeta(u.Name) + `\s+` + regexp.QuoteMeta(u.Name) + `\s+3145745 .*sftp-up\.bin$`).MatchString(out) {
			t.Errorf("sftp ls -l does not show the file as the user's, 3145745 bytes:\n%s", out)
		}
		// sftp-server runs as the user: root's files stay closed.
		if !strings.Contains(errOut, "Permission denied") {
			t.Errorf("sftp get /etc/shadow: no \"Permission denied\" in\n%s", errOut)
		}
		if _, err := os.Stat(filepath.Join(dir, "shadow")); err == nil {
			t.Errorf("sftp fetched /etc/shadow")
		}
		sameFile(t, up, filepath.Join(u.Home, "sftp-up.bin"))
		sameFile(t, up, filepath.Join(dir, "down.bin"))
		ownedBy(t, u, filepath.Join(u.Home, "sftp-up.bin"))
	})

	for _, mode := range []struct{ name, flag string }{{"scp sftp mode", ""}, {"scp legacy -O", "-O"}} {
		t.Run(mode.name, func(t *testing.T) {
			scp := sshmeshtest.NeedBinary(t, "scp", "openssh-client")
			if mode.flag == "" {
				needSFTPServer(t)
			}
			dir := t.TempDir()
			up := writeRandom(t, filepath.Join(dir, "up.bin"), 2<<20+3)
			remote := "scp" + mode.flag + ".bin"
			args := func(a ...string) []string {
				all := meshSSHOptions(ls.conf)
				if mode.flag != "" {
					all = append(all, mode.flag)
				}
				return append(all, a...)
			}
			out, errOut, code := sh.run(t, scp, args("-p", up, target+":"+remote)...)
			if code != 0 {
				t.Fatalf("scp up: exit %d %s %s", code, out, errOut)
			}
			sh.mustOK(t, scp, args(target+":"+remote, filepath.Join(dir, "down.bin"))...)
			sameFile(t, up, filepath.Join(u.Home, remote))
			sameFile(t, up, filepath.Join(dir, "down.bin"))
			ownedBy(t, u, filepath.Join(u.Home, remote))
		})
	}

	t.Run("rsync", func(t *testing.T) {
		rsync := sshmeshtest.NeedBinary(t, "rsync", "rsync")
		src := filepath.Join(t.TempDir(), "src")
		makeTree(t, src)
		o := tool{}
		e := meshSSHCommand(ls.conf)
		o.mustOK(t, rsync, "-a", "-e", e, src+"/", target+":tree/")
		remote := filepath.Join(u.Home, "tree")
		back := filepath.Join(t.TempDir(), "back")
		o.mustOK(t, rsync, "-a", "-e", e, target+":tree/", back+"/")
		want := treeDigest(t, src)
		if diff := cmp.Diff(want, treeDigest(t, remote)); diff != "" {
			t.Errorf("rsync up: the tree on the server differs (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, treeDigest(t, back)); diff != "" {
			t.Errorf("rsync down: the tree fetched back differs (-want +got):\n%s", diff)
		}
		ownedBy(t, u, remote)
	})

	t.Run("git", func(t *testing.T) {
		git := sshmeshtest.NeedBinary(t, "git", "git")
		ls.mustSSH(t, sh, target, "git init -q --bare -b main repo.git")
		dir := t.TempDir()
		o := tool{env: []string{"GIT_SSH_COMMAND=" + meshSSHCommand(ls.conf), "HOME=" + dir,
			"GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@example.com",
			"GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@example.com"}}
		work, clone := filepath.Join(dir, "work"), filepath.Join(dir, "clone")
		o.mustOK(t, git, "init", "-q", "-b", "main", work)
		makeTree(t, filepath.Join(work, "tree"))
		o.dir = work
		o.mustOK(t, git, "add", "-A")
		o.mustOK(t, git, "commit", "-q", "-m", "first")
		o.mustOK(t, git, "remote", "add", "origin", target+":repo.git")
		o.mustOK(t, git, "push", "-q", "origin", "main")
		o.dir = dir
		o.mustOK(t, git, "clone", "-q", target+":repo.git", clone)
		// git keeps contents, the executable bit and symlinks.
		if diff := cmp.Diff(gitDigest(treeDigest(t, filepath.Join(work, "tree"))), gitDigest(treeDigest(t, filepath.Join(clone, "tree")))); diff != "" {
			t.Errorf("clone differs from what was pushed (-want +got):\n%s", diff)
		}
		// Push from the clone, pull into the first: the same commit.
		o.dir = clone
		writeRandom(t, filepath.Join(clone, "second.bin"), 100_000)
		o.mustOK(t, git, "add", "-A")
		o.mustOK(t, git, "commit", "-q", "-m", "second")
		o.mustOK(t, git, "push", "-q")
		o.dir = work
		o.mustOK(t, git, "pull", "-q", "--ff-only", "origin", "main")
		head := func(d string) string { return strings.TrimSpace(tool{dir: d}.mustOK(t, git, "rev-parse", "HEAD")) }
		if a, b := head(work), head(clone); a != b {
			t.Errorf("HEAD after push and pull: %s vs %s", a, b)
		}
		sameFile(t, filepath.Join(clone, "second.bin"), filepath.Join(work, "second.bin"))
		ownedBy(t, u, filepath.Join(u.Home, "repo.git"))
	})

	t.Run("abrupt disconnect", func(t *testing.T) { testAbruptDisconnect(t, ls, u) })
}

// mustSSH is ssh that fails the test unless the exit code is 0.
func (ls *loginServer) mustSSH(t *testing.T, o tool, args ...string) string {
	t.Helper()
	out, errOut, code := ls.ssh(t, o, args...)
	if code != 0 {
		t.Fatalf("ssh %q: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// dial logs in as user with x/crypto/ssh from the in-process client node.
func (ls *loginServer) dial(t *testing.T, user string) *ssh.Client {
	t.Helper()
	c, err := sshmeshtest.Dial(t, ls.goClient, ls.server, ls.srv, user)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testWindowChange runs ssh -tt under a terminal the test owns, so that a
// resize of that terminal sends SIGWINCH to ssh, which sends window-change.
// The remote command waits for its terminal's size to change, then prints
// it: the test waits for the window-change itself, not for a time after
// which ssh has probably sent it.
func testWindowChange(t *testing.T, ls *loginServer, target string) {
	ssh := sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	cmd := exec.Command(ssh, append(meshSSHOptions(ls.conf), "-tt", target,
		`stty size; while [ "$(stty size)" = "30 100" ]; do sleep 0.05; done; stty size`)...)
	cmd.Env = append(os.Environ(), "TERM=xterm")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var out sshmeshtest.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&out, ptmx); close(copied) }()
	var waitErr error
	waited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(waited) }()
	defer func() {
		cmd.Process.Kill() // if still running
		<-waited
	}()
	out.WaitFor(t, "30 100")
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 50, Cols: 160}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waited:
		if waitErr != nil {
			t.Errorf("ssh: %v", waitErr)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("ssh did not end (the window-change never reached the session?); output %q", out.String())
	}
	select {
	case <-copied:
	case <-time.After(20 * time.Second): // it closes as ssh exits
		t.Errorf("the terminal stayed open after ssh ended")
	}
	sizes := regexp.MustCompile(`(?m)^(\d+ \d+)\r?$`).FindAllStringSubmatch(out.String(), -1)
	var got []string
	for _, s := range sizes {
		got = append(got, s[1])
	}
	if diff := cmp.Diff([]string{"30 100", "50 160"}, got); diff != "" {
		t.Errorf("stty size before and after the resize (-want +got):\n%s\noutput %q", diff, out.String())
	}
}

// testAbruptDisconnect kills the client side of a running session and
// waits for every process of the user to be gone. Killing ssh closes the
// pipe to `sshmesh nc`, which half-closes TCP, so the server sees the conn
// end. Killing `sshmesh nc` itself takes its whole TCP stack with it: no
// FIN, no RST ever reaches the server, which, like sshd behind a dead
// network, notices only by keepalives.
func testAbruptDisconnect(t *testing.T, ls *loginServer, u *loginUser) {
	ssh := sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	sshmeshtest.NeedBinary(t, "pgrep", "procps")
	// A second server on port 2222 of the same node, with fast keepalives.
	fast := &sshmesh.Server{Policy: ls.srv.Policy, HostKeys: ls.srv.HostKeys, Logger: ls.srv.Logger,
		KeepAliveInterval: 500 * time.Millisecond, KeepAliveCountMax: 2}
	ln, err := ls.server.Listen("tcp", ":2222")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- fast.Serve(ln) }()
	t.Cleanup(func() {
		fast.Close()
		if err := <-errc; !errors.Is(err, sshmesh.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})

	uid := strconv.Itoa(u.UID)
	userPids := func() string {
		out, _ := exec.Command("pgrep", "-a", "-u", uid).Output()
		return strings.TrimSpace(string(out))
	}
	waitGone := func(what string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for userPids() != "" {
			if time.Since(start) > within {
				t.Errorf("%s: processes of the user still there after %v:\n%s", what, within, userPids())
				return time.Since(start)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitGone("before", 20*time.Second) // the earlier subtests' sessions, ending

	for _, c := range []struct {
		name string
		port string
		kill func(sshPid int) int // returns the pid killed
	}{
		{"kill -9 ssh", "22", func(pid int) int { return pid }},
		{"kill -9 sshmesh nc", "2222", func(pid int) int { return childPid(t, pid) }},
	} {
		marker := "sshmesh-e2e-marker-" + strconv.Itoa(time.Now().Nanosecond())
		cmd := exec.Command(ssh, append(meshSSHOptions(ls.conf), "-p", c.port, u.Name+"@"+ls.host,
			"sleep 1000 & sleep 1001; echo "+marker)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waited := make(chan struct{})
		go func() { cmd.Wait(); close(waited) }()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if exec.Command("pgrep", "-u", uid, "-f", marker).Run() == nil &&
				exec.Command("pgrep", "-u", uid, "-x", "-f", "sleep 1001").Run() == nil {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-waited
				t.Fatalf("%s: the session did not start", c.name)
			}
		}
		pid := c.kill(cmd.Process.Pid)
		if proc, err := os.FindProcess(pid); err != nil {
			t.Fatal(err)
		} else if err := proc.Kill(); err != nil {
			t.Fatal(err)
		}
		took := waitGone(c.name, 10*time.Second)
		t.Logf("%s: the session's processes were gone %v after the kill", c.name, took.Round(10*time.Millisecond))
		cmd.Process.Kill()
		<-waited
	}
}

// childPid returns the only child of pid (ssh's ProxyCommand, which the
// shell exec'd into `sshmesh nc`).
func childPid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		t.Fatalf("ssh %d has children %q, want one", pid, f)
	}
	child, _ := strconv.Atoi(f[0])
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", child)); !bytes.Contains(cmdline, []byte("nc\x00--wg")) {
		t.Fatalf("ssh's child %d is %q, not sshmesh nc", child, cmdline)
	}
	return child
}

// TestLoginNonRootServe runs `sshmesh serve` as an ordinary user: it serves
// that user, and refuses a login mapped to root with the session package's
// message to the client.
func TestLoginNonRootServe(t *testing.T) {
	u := newLoginUser(t)
	m := sshmeshtest.NewMesh(t, 2)
	server, client := m.Nodes[0], m.Nodes[1]
	server.Node.Close()
	client.Node.Close()
	// Everything serve reads or writes, in a directory of its own user.
	dir, err := os.MkdirTemp("", "sshmesh-e2e-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(filepath.Dir(binPath), 0o755); err != nil {
		t.Fatal(err)
	}
	serverConf := server.WriteWGQuick(t, filepath.Join(dir, "server.conf"))
	clientConf := client.WriteWGQuick(t, filepath.Join(t.TempDir(), "client.conf"))
	pol := fmt.Sprintf(`{
  "nodes": {
    "srv": {"key": %q, "tags": ["tag:server"]},
    "laptop": {"key": %q, "owner": "ann@example.com"},
  },
  "tagOwners": {"tag:server": ["ann@example.com"]},
  "ssh": [
    {"action": "accept", "src": ["laptop"], "dst": ["tag:server"], "users": [%q, "root"]},
  ],
}`, server.Key.Public(), client.Key.Public(), u.Name)
	polPath := filepath.Join(dir, "policy.hujson")
	os.WriteFile(polPath, []byte(pol), 0o600)
	for _, p := range []string{dir, serverConf, polPath} {
		if err := os.Chown(p, u.UID, u.GID); err != nil {
			t.Fatal(err)
		}
	}

	var log sshmeshtest.Buffer
	startServe(t, &log, func(cmd *exec.Cmd) {
		cmd.Dir = dir
		cmd.Env = []string{"HOME=" + u.Home, "USER=" + u.Name, "PATH=/usr/bin:/bin"}
		runAs(cmd, u.UID, u.GID)
	}, "--wg", serverConf, "--policy", polPath, "--state", filepath.Join(dir, "state"), "--port", "22")

	host := server.Addr.String()
	out, errOut, code := stockSSH(t, clientConf, u.Name+"@"+host, "id -un; exit 5")
	if code != 5 || out != u.Name+"\n" {
		t.Errorf("own user: exit %d, stdout %q, stderr %q; want 5 and %q", code, out, errOut, u.Name)
	}
	out, errOut, code = stockSSH(t, clientConf, "-tt", u.Name+"@"+host, "tty")
	if code != 0 || !strings.HasPrefix(out, "/dev/pts/") {
		t.Errorf("own user with a pty: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	_, errOut, code = stockSSH(t, clientConf, "root@"+host, "id")
	want := fmt.Sprintf("This server does not run as root, so it can only start sessions as its own user %q, not as \"root\".", u.Name)
	if code == 0 || !strings.Contains(errOut, want) {
		t.Errorf("root: exit %d, stderr %q; want a failure and %q", code, errOut, want)
	}
}

// needSFTPServer skips (fails under CI) when the server side has no
// sftp-server where package session looks first on Debian.
func needSFTPServer(t *testing.T) {
	t.Helper()
	sshmeshtest.NeedBinary(t, "/usr/lib/openssh/sftp-server", "openssh-sftp-server")
}

// parseEnv parses `env` output.
func parseEnv(s string) map[string]string {
	env := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

// loginDefsPath is ENV_PATH from /etc/login.defs, or sshd's default: the
// PATH a session of an ordinary user gets.
func loginDefsPath() string {
	b, _ := os.ReadFile("/etc/login.defs")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "ENV_PATH" {
			return strings.TrimPrefix(strings.Trim(f[1], `"`), "PATH=")
		}
	}
	return "/usr/local/bin:/usr/bin:/bin:/usr/games"
}

// writeRandom writes n random bytes to path and returns path.
func writeRandom(t *testing.T, path string, n int) string {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// makeTree builds a small tree with nested directories, an empty file, an
// executable, a symlink and set modification times.
func makeTree(t *testing.T, root string) {
	t.Helper()
	for _, d := range []string{"sub/deep", "empty"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeRandom(t, filepath.Join(root, "big.bin"), 1<<20+5)
	writeRandom(t, filepath.Join(root, "sub", "small.bin"), 333)
	os.WriteFile(filepath.Join(root, "sub", "deep", "empty.txt"), nil, 0o640)
	os.WriteFile(filepath.Join(root, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.Chmod(filepath.Join(root, "sub", "deep", "empty.txt"), 0o640)
	os.Symlink("sub/small.bin", filepath.Join(root, "link"))
	when := time.Date(2020, 2, 2, 2, 2, 2, 0, time.UTC)
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			os.Chtimes(p, when, when)
		}
		return err
	})
}

// treeDigest describes every entry under root by type, permissions,
// modification time (files) and content hash or link target.
func treeDigest(t *testing.T, root string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			got[rel] = "symlink " + target
		case fi.IsDir():
			got[rel] = fmt.Sprintf("dir %v", fi.Mode().Perm())
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got[rel] = fmt.Sprintf("file %v %s %x", fi.Mode().Perm(), fi.ModTime().UTC().Format(time.RFC3339), sha256.Sum256(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// gitDigest reduces a treeDigest to what git keeps: files with their
// content and executable bit, and symlinks.
func gitDigest(tree map[string]string) map[string]string {
	out := map[string]string{}
	for name, d := range tree {
		f := strings.Fields(d)
		switch f[0] {
		case "symlink":
			out[name] = d
		case "file":
			out[name] = fmt.Sprintf("file exec=%v %s", strings.Contains(f[1], "x"), f[3])
		}
	}
	return out
}

// sameFile fails the test unless a and b hold the same bytes.
func sameFile(t *testing.T, a, b string) {
	t.Helper()
	ba, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(ba) != sha256.Sum256(bb) {
		t.Errorf("%s (%d bytes) and %s (%d bytes) differ", a, len(ba), b, len(bb))
	}
}

// ownedBy fails the test unless everything under path belongs to u.
func ownedBy(t *testing.T, u *loginUser, path string) {
	t.Helper()
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			t.Error(err)
			return nil
		}
		if uid, gid := fileOwner(fi); uid != u.UID || gid != u.GID {
			t.Errorf("%s is owned by %d:%d, want %s (%d:%d)", p, uid, gid, u.Name, u.UID, u.GID)
		}
		return nil
	})
}
