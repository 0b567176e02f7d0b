package sshmesh_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// peerCred returns the uid and gid that c's peer had when it connected or
// listened (SO_PEERCRED).
func peerCred(t *testing.T, c net.Conn) (uid, gid uint32) {
	t.Helper()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return cred.Uid, cred.Gid
}

// credService is a Unix-socket service, listening as root and open to
// everyone by its mode (0666), that answers each conn with the uid and gid
// of its peer ("uid=U gid=G\n", from SO_PEERCRED): what a service that
// trusts its peer's uid sees.
type credService struct {
	mu      sync.Mutex
	accepts int
}

func newCredService(t *testing.T, path string) *credService {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	s := &credService{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.accepts++
			s.mu.Unlock()
			uid, gid := peerCred(t, c)
			fmt.Fprintf(c, "uid=%d gid=%d\n", uid, gid)
			c.Close()
		}
	}()
	return s
}

func (s *credService) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepts
}

// aclDeny makes dir deny user everything by a POSIX ACL, while its mode
// bits (0777) would allow it all.
func aclDeny(t *testing.T, dir, user string) {
	t.Helper()
	setfacl := sshmeshtest.NeedBinary(t, "setfacl", "acl")
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(setfacl, "-m", "u:"+user+":---", dir).CombinedOutput(); err != nil {
		t.Fatalf("setfacl on %s: %v %s", dir, err, out)
	}
}

// TestForwardSocketsAsUser: socket forwarding connects and binds with the
// local user's credentials, so the kernel makes every access decision
// (issue 22, finding 4). A service behind ssh -L sees the user's uid and
// gid, not root's; a -R socket is the user's, and so are the credentials
// its clients see; a directory whose ACL denies the user is refused both
// ways, though its mode bits allow everyone.
func TestForwardSocketsAsUser(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("uid=%s gid=%s\n", nobody.Uid, nobody.Gid)
	dir, open, denied := testkit.SocketDirs(t, "sshmesh-fwd-test-")
	newCredService(t, filepath.Join(open, "svc.sock"))
	deniedSvc := newCredService(t, filepath.Join(denied, "svc.sock"))
	aclDeny(t, denied, "nobody")

	var log testkit.Buffer
	ts := startServer(t, &sshmesh.Server{Logger: log.Logger(),
		Policy: forwardPolicy([]string{dir + "/*/*"}, []string{dir + "/*/*"}, false)})
	cl := ts.dial(t, "nobody")

	// -L: the service sees nobody.
	c, err := cl.Dial("unix", filepath.Join(open, "svc.sock"))
	if err != nil {
		t.Fatalf("-L to %s: %v\n%s", open, err, log.String())
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if got != want {
		t.Errorf("-L: the service saw %q (%v), want %q", got, err, want)
	}

	// -L through a directory the ACL denies: refused, never connected.
	if c, err := cl.Dial("unix", filepath.Join(denied, "svc.sock")); err == nil {
		c.Close()
		t.Error("-L through a directory whose ACL denies the user: connected")
	}
	if n := deniedSvc.count(); n != 0 {
		t.Errorf("the service behind the denying ACL saw %d conns", n)
	}

	// -R: the socket is nobody's, 0600, and its clients see nobody.
	sock := filepath.Join(open, "r.sock")
	ln, err := cl.ListenUnix(sock)
	if err != nil {
		t.Fatalf("-R on %s: %v\n%s", sock, err, log.String())
	}
	defer ln.Close()
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if got, wantSock := fmt.Sprintf("%v uid=%d gid=%d", fi.Mode(), st.Uid, st.Gid), "Srw------- "+strings.TrimSuffix(want, "\n"); got != wantSock {
		t.Errorf("-R socket: %s, want %s", got, wantSock)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	rc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := peerCred(t, rc)
	rc.Close()
	if got := fmt.Sprintf("uid=%d gid=%d\n", uid, gid); got != want {
		t.Errorf("-R: a client of the socket sees its listener as %q, want %q", got, want)
	}

	// -R in a directory the ACL denies: refused, nothing made there.
	if l, err := cl.ListenUnix(filepath.Join(denied, "r.sock")); err == nil {
		l.Close()
		t.Error("-R in a directory whose ACL denies the user: allowed")
	}
	if ents, _ := os.ReadDir(denied); len(ents) != 1 {
		t.Errorf("%s holds %v, want svc.sock only", denied, ents)
	}
	l := log.String()
	for _, want := range []string{`target=` + denied + `/svc.sock reason="open svc.sock: permission denied"`, `target=` + denied + `/r.sock reason="mkdir: permission denied"`} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q:\n%s", want, l)
		}
	}
}
