package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// fwdPeerCred is "uid=U gid=G": who c's peer was when it connected or
// listened (SO_PEERCRED).
func fwdPeerCred(c net.Conn) (string, error) {
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return "", err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return "", err
	}
	if serr != nil {
		return "", serr
	}
	return fmt.Sprintf("uid=%d gid=%d", cred.Uid, cred.Gid), nil
}

// fwdUnixService listens on path as root (mode 0666, open to all by its
// mode bits), serves each conn and counts them.
func fwdUnixService(t *testing.T, path string, serve func(net.Conn)) *atomic.Int32 {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return &n
}

// fwdWaitPath waits until path exists.
func fwdWaitPath(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Lstat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear within 30 s", path)
}

// TestStockSSHSocketForwardAsUser: ssh -L and -R on Unix sockets act as
// the session's user, as with OpenSSH (issue 22, finding 4). The service
// behind -L sees the user's uid and gid (SO_PEERCRED), not root's; the -R
// socket is the user's, 0600, and its clients see the user; a directory
// whose ACL denies the user, though its mode bits allow everyone, is
// refused both ways.
func TestStockSSHSocketForwardAsUser(t *testing.T) {
	u := newLoginUser(t)
	setfacl := sshmeshtest.NeedBinary(t, "setfacl", "acl")
	want := fmt.Sprintf("uid=%d gid=%d", u.UID, u.GID)
	dir, open, denied := testkit.SocketDirs(t, "sshmesh-e2e-sock-")
	credServe := func(c net.Conn) {
		cred, err := fwdPeerCred(c)
		if err != nil {
			cred = err.Error()
		}
		fmt.Fprintln(c, cred)
	}
	fwdUnixService(t, filepath.Join(open, "svc.sock"), credServe)
	deniedConns := fwdUnixService(t, filepath.Join(denied, "svc.sock"), credServe)
	mustRun(t, setfacl, "-m", "u:"+u.Name+":---", denied)
	local := t.TempDir() // ssh's end of the forwards
	fwdUnixService(t, filepath.Join(local, "echo.sock"), func(c net.Conn) { io.Copy(c, c) })

	confs, host, log := fwdServer(t, policy.Decision{LocalForward: []string{dir + "/*/*"}, RemoteForward: []string{dir + "/*/*"}}, nil)
	rsock := filepath.Join(open, "r.sock")
	fwdSSH(t, confs[0], "-N", "-o", "ExitOnForwardFailure=yes",
		"-L", filepath.Join(local, "l.sock")+":"+filepath.Join(open, "svc.sock"),
		"-L", filepath.Join(local, "d.sock")+":"+filepath.Join(denied, "svc.sock"),
		"-R", rsock+":"+filepath.Join(local, "echo.sock"), u.Name+"@"+host)
	fwdWaitPath(t, filepath.Join(local, "d.sock"))
	fwdWaitPath(t, rsock)

	// -L: the service sees the user.
	c, err := net.Dial("unix", filepath.Join(local, "l.sock"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if line != want+"\n" {
		t.Errorf("-L: the service saw %q (%v), want %q", line, err, want)
	}

	// -L through the denying ACL: the channel is refused, ssh closes.
	if c, err := net.Dial("unix", filepath.Join(local, "d.sock")); err == nil {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Errorf("-L through a directory whose ACL denies the user: got %q", b)
		}
		c.Close()
	}
	if n := deniedConns.Load(); n != 0 {
		t.Errorf("the service behind the denying ACL saw %d conns", n)
	}

	// -R: the socket is the user's, 0600; its clients see the user; the
	// conn reaches ssh's end.
	fi, err := os.Lstat(rsock)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if got := fmt.Sprintf("%v uid=%d gid=%d", fi.Mode(), st.Uid, st.Gid); got != "Srw------- "+want {
		t.Errorf("-R socket: %s, want Srw------- %s", got, want)
	}
	rc, err := net.Dial("unix", rsock)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fwdPeerCred(rc); got != want {
		t.Errorf("-R: a client of the socket sees its listener as %q (%v), want %s", got, err, want)
	}
	io.WriteString(rc, "through -R")
	rc.(*net.UnixConn).CloseWrite()
	rc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(rc); string(b) != "through -R" {
		t.Errorf("echo through -R: %q, %v", b, err)
	}
	rc.Close()

	// -R in the directory the ACL denies: the request fails.
	if _, errOut, code := stockSSH(t, confs[1], "-N", "-o", "ExitOnForwardFailure=yes",
		"-R", filepath.Join(denied, "r.sock")+":"+filepath.Join(local, "echo.sock"), u.Name+"@"+host); code != 255 || !strings.Contains(errOut, "forwarding failed") {
		t.Errorf("-R in a directory whose ACL denies the user: exit %d, %q", code, errOut)
	}
	if ents, _ := os.ReadDir(denied); len(ents) != 1 {
		t.Errorf("%s holds %v, want svc.sock only", denied, ents)
	}
	log.WaitFor(t, `target=`+denied+`/svc.sock reason="open svc.sock: permission denied"`)
	log.WaitFor(t, `target=`+denied+`/r.sock reason="mkdir: permission denied"`)
}
