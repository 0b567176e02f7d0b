package sshmesh

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/sshmesh/sshmesh/session"
)

// Unix-socket forwarding (direct-streamlocal@openssh.com and
// streamlocal-forward@openssh.com), done as root on the user's behalf.
//
// How a path is made safe to use as root:
//
//   - It must be absolute and lie, after cleaning, under the user's home,
//     /tmp or /run/user/UID (compared as strings: ".." is gone after
//     cleaning, and symlinks are dealt with next).
//   - Below that root, every component is opened with openat(O_PATH |
//     O_NOFOLLOW), one at a time, from the previous component's fd: a
//     symlink anywhere below the root is refused, and swapping one in later
//     changes nothing, because everything after uses the fds. Each
//     directory passed must be searchable by the user, by its mode bits
//     (ACLs are not consulted, so an ACL grant is refused, never the reverse).
//   - Connecting (ssh -L to a socket): the socket itself is opened with
//     O_PATH | O_NOFOLLOW, must be a socket the user may write, and is
//     connected through /proc/self/fd/N, which names that inode and nothing
//     else — the name can be swapped in between to no effect.
//   - Listening (ssh -R on a socket): the user must be able to write the
//     parent directory. The socket is bound in a fresh root-owned 0700
//     directory made inside that parent (so nobody else can reach or swap
//     it), chowned to the user and set to 0600 there (OpenSSH's
//     StreamLocalBindMask 0177), and then renamed into place with
//     RENAME_NOREPLACE. So it appears at its path already the user's, with
//     no moment where it is root's or open to others, and an existing file
//     at the path is never replaced (sshd's StreamLocalBindUnlink no).

// streamLocalRoots returns the directories a user's sockets may be under.
func streamLocalRoots(u *session.User) []string {
	roots := []string{"/tmp", "/run/user/" + u.Uid}
	if h := path.Clean(u.Home); strings.HasPrefix(h, "/") && h != "/" {
		roots = append(roots, h)
	}
	return roots
}

// userIDs is a user's ids for the mode-bit checks.
type userIDs struct {
	uid, gid uint32
	groups   map[uint32]bool
}

func idsOf(u *session.User) (userIDs, error) {
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return userIDs{}, err
	}
	ids := userIDs{uid: uint32(uid), gid: uint32(gid), groups: map[uint32]bool{uint32(gid): true}}
	for _, g := range u.Groups {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			ids.groups[uint32(n)] = true
		}
	}
	return ids, nil
}

// may reports whether the user may access st with want (unix.S_IROTH-style
// bits: 4 read, 2 write, 1 search), by mode bits as the kernel would.
func (ids userIDs) may(st *unix.Stat_t, want uint32) bool {
	if ids.uid == 0 {
		return true
	}
	mode := st.Mode & 0o777
	switch {
	case st.Uid == ids.uid:
		return (mode>>6)&want == want
	case ids.groups[st.Gid]:
		return (mode>>3)&want == want
	}
	return mode&want == want
}

// openSocketParent checks p for the user and opens its parent directory
// (O_PATH) by walking from an allowed root without following symlinks. It
// returns the directory's fd and the socket's name in it.
func openSocketParent(p string, u *session.User) (dirfd int, name string, ids userIDs, err error) {
	ids, err = idsOf(u)
	if err != nil {
		return -1, "", ids, err
	}
	if !strings.HasPrefix(p, "/") {
		return -1, "", ids, errors.New("socket path must be absolute")
	}
	p = path.Clean(p)
	root := ""
	for _, r := range streamLocalRoots(u) {
		if strings.HasPrefix(p, r+"/") && len(r) > len(root) {
			root = r
		}
	}
	if root == "" {
		return -1, "", ids, errors.New("socket path must be under the home directory, /tmp or /run/user/UID")
	}
	rest := strings.Split(p[len(root)+1:], "/")
	name = rest[len(rest)-1]
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", ids, fmt.Errorf("open %s: %w", root, err)
	}
	for i := 0; ; i++ {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, "", ids, err
		}
		if !ids.may(&st, 1) {
			unix.Close(fd)
			return -1, "", ids, errors.New("permission denied")
		}
		if i == len(rest)-1 {
			return fd, name, ids, nil
		}
		next, err := unix.Openat(fd, rest[i], unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return -1, "", ids, errors.New("a component of the path is a symlink or not a directory")
			}
			return -1, "", ids, err
		}
		fd = next
	}
}

// socketUser looks up the conn's local user for socket forwarding.
func (c *serverConn) socketUser() (*session.User, error) {
	return session.LookupUser(c.decision.LocalUser)
}

// directStreamLocal serves direct-streamlocal@openssh.com (ssh -L to a
// Unix socket).
func (c *serverConn) directStreamLocal(ctx context.Context, nch ssh.NewChannel) {
	var m struct {
		Path      string
		Reserved0 string
		Reserved1 uint32
	}
	if ssh.Unmarshal(nch.ExtraData(), &m) != nil || m.Path == "" {
		nch.Reject(ssh.ConnectionFailed, "malformed direct-streamlocal request")
		return
	}
	p := path.Clean(m.Path)
	if c.allowForward(ctx, ForwardRequest{Kind: LocalSocket, Path: p}) != nil {
		nch.Reject(ssh.Prohibited, "socket forwarding to "+m.Path+": "+errNotAllowed.Error())
		return
	}
	conn, err := c.dialUserSocket(p)
	if err != nil {
		c.forwardRefused(LocalSocket, p, err.Error())
		nch.Reject(ssh.ConnectionFailed, "connect to "+m.Path+" failed")
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		conn.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	c.pipe(ctx, ch, conn)
}

// dialUserSocket connects to the socket at p as the local user may.
func (c *serverConn) dialUserSocket(p string) (net.Conn, error) {
	u, err := c.socketUser()
	if err != nil {
		return nil, err
	}
	dir, name, ids, err := openSocketParent(p, u)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	fd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, errors.New("not a socket")
	}
	if !ids.may(&st, 2) {
		return nil, errors.New("permission denied")
	}
	return net.Dial("unix", fmt.Sprintf("/proc/self/fd/%d", fd))
}

// streamLocalMsg is the payload of streamlocal-forward@openssh.com and its
// cancel.
type streamLocalMsg struct{ Path string }

// streamLocalForward serves streamlocal-forward@openssh.com (ssh -R on a
// Unix socket).
func (c *serverConn) streamLocalForward(ctx context.Context, payload []byte) bool {
	var m streamLocalMsg
	if ssh.Unmarshal(payload, &m) != nil || m.Path == "" {
		return false
	}
	p := path.Clean(m.Path)
	if c.allowForward(ctx, ForwardRequest{Kind: RemoteSocket, Path: p}) != nil {
		return false
	}
	st := c.forwards(ctx)
	if st == nil {
		return false
	}
	ln, err := c.listenUserSocket(p)
	if err != nil {
		c.forwardRefused(RemoteSocket, p, err.Error())
		return false
	}
	key := "unix:" + m.Path
	if !st.addListener(key, ln) {
		ln.Close()
		return false
	}
	c.srv.logger().Info("remote forward listening", c.forwardAttrs(RemoteSocket, p)...)
	go func() {
		defer st.wg.Done()
		defer ln.Close()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			st.wg.Add(1)
			go func() {
				defer st.wg.Done()
				payload := ssh.Marshal(struct{ Path, Reserved string }{m.Path, ""})
				c.openToClient(st, "forwarded-streamlocal@openssh.com", payload, conn, p)
			}()
		}
	}()
	return true
}

// cancelStreamLocalForward serves cancel-streamlocal-forward@openssh.com.
func (c *serverConn) cancelStreamLocalForward(payload []byte) bool {
	var m streamLocalMsg
	if ssh.Unmarshal(payload, &m) != nil {
		return false
	}
	st := c.currentForwards()
	return st != nil && st.removeListener("unix:"+m.Path)
}

// userSocketListener is a listening socket made for a user; Close removes
// the socket file, if it is still the one made.
type userSocketListener struct {
	*net.UnixListener
	dir      int // the parent directory, O_PATH
	name     string
	dev, ino uint64
	once     sync.Once
}

// Close is safe to call more than once, concurrently (cancel, the accept
// loop and the conn's end may all close it).
func (l *userSocketListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		var st unix.Stat_t
		if unix.Fstatat(l.dir, l.name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Dev == l.dev && st.Ino == l.ino {
			unix.Unlinkat(l.dir, l.name, 0)
		}
		unix.Close(l.dir)
	})
	return err
}

// listenUserSocket makes a listening socket at p owned by the local user,
// mode 0600, as described at the top of this file.
func (c *serverConn) listenUserSocket(p string) (*userSocketListener, error) {
	u, err := c.socketUser()
	if err != nil {
		return nil, err
	}
	dir, name, ids, err := openSocketParent(p, u)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(dir)
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(dir, &st); err != nil {
		return nil, err
	}
	if !ids.may(&st, 3) {
		return nil, errors.New("permission denied")
	}
	ln, err := bindPrivately(dir, name, int(ids.uid), int(ids.gid), 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		ln.Close()
		return nil, err
	}
	ok = true
	return &userSocketListener{UnixListener: ln, dir: dir, name: name, dev: st.Dev, ino: st.Ino}, nil
}

// bindPrivately binds a Unix socket in a fresh root-owned 0700 directory
// made in dir, sets its owner and mode, and renames it to dir/name without
// replacing anything there. The temporary directory is removed.
func bindPrivately(dir int, name string, uid, gid int, mode uint32) (*net.UnixListener, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := ".sshmesh-" + hex.EncodeToString(rnd[:])
	if err := unix.Mkdirat(dir, tmp, 0o700); err != nil {
		return nil, fmt.Errorf("mkdir: %w", err)
	}
	defer unix.Unlinkat(dir, tmp, unix.AT_REMOVEDIR)
	tfd, err := unix.Openat(dir, tmp, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(tfd)
	var st unix.Stat_t
	if err := unix.Fstat(tfd, &st); err != nil {
		return nil, err
	}
	if st.Uid != 0 || st.Mode&0o777 != 0o700 {
		// Someone with write access to dir swapped the directory.
		return nil, errors.New("temporary directory was replaced")
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("/proc/self/fd/%d/s", tfd), Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, error) {
		ln.Close()
		unix.Unlinkat(tfd, "s", 0)
		return nil, err
	}
	if err := unix.Fchmodat(tfd, "s", mode, 0); err != nil {
		return fail(err)
	}
	if err := unix.Fchownat(tfd, "s", uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail(err)
	}
	if err := unix.Renameat2(tfd, "s", dir, name, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			err = errors.New("a file already exists at that path")
		}
		return fail(err)
	}
	return ln, nil
}
