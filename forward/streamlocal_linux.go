package forward

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/sshmesh/sshmesh/session"
)

// Unix-socket forwarding (direct-streamlocal@openssh.com and
// streamlocal-forward@openssh.com), done with the local user's credentials
// (asUser, asuser_linux.go): the kernel decides every access (mode bits,
// ACLs), a service behind ssh -L sees the user's uid and gid in
// SO_PEERCRED, and a -R socket is made by the user. On top of that, the
// server keeps sockets to a few places of the user's:
//
//   - The path must be absolute and lie, after cleaning, under the user's
//     home, /tmp or /run/user/UID (compared as strings: ".." is gone after
//     cleaning, and symlinks are dealt with next).
//   - Below that root, every component is opened with openat(O_PATH |
//     O_NOFOLLOW), one at a time, from the previous component's fd: a
//     symlink anywhere below the root is refused, and swapping one in later
//     changes nothing, because everything after uses the fds.
//   - Connecting (ssh -L to a socket): the socket itself is opened with
//     O_PATH | O_NOFOLLOW, must be a socket, and is connected through
//     /proc/self/fd/N, which names that inode and nothing else.
//   - Listening (ssh -R on a socket): the socket is bound in a fresh 0700
//     directory the user makes inside the parent (so nobody else can reach
//     it), set to 0600 there (OpenSSH's StreamLocalBindMask 0177), and then
//     renamed into place with RENAME_NOREPLACE. So it never appears open to
//     others, and an existing file at the path is never replaced (sshd's
//     StreamLocalBindUnlink no).

// streamLocalRoots returns the directories a user's sockets may be under.
func streamLocalRoots(u *session.User) []string {
	roots := []string{"/tmp", "/run/user/" + u.Uid}
	if h := path.Clean(u.Home); strings.HasPrefix(h, "/") && h != "/" {
		roots = append(roots, h)
	}
	return roots
}

// openSocketParent checks that p is under one of u's roots and opens its
// parent directory (O_PATH) by walking from that root without following
// symlinks. It returns the directory's fd and the socket's name in it. Call
// it as the user, so that the kernel checks the search permission of each
// directory on the way.
func openSocketParent(p string, u *session.User) (dirfd int, name string, err error) {
	if !strings.HasPrefix(p, "/") {
		return -1, "", errors.New("socket path must be absolute")
	}
	p = path.Clean(p)
	root := ""
	for _, r := range streamLocalRoots(u) {
		if strings.HasPrefix(p, r+"/") && len(r) > len(root) {
			root = r
		}
	}
	if root == "" {
		return -1, "", errors.New("socket path must be under the home directory, /tmp or /run/user/UID")
	}
	rest := strings.Split(p[len(root)+1:], "/")
	name = rest[len(rest)-1]
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("open %s: %w", root, err)
	}
	for _, dir := range rest[:len(rest)-1] {
		next, err := unix.Openat(fd, dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return -1, "", errors.New("a component of the path is a symlink or not a directory")
			}
			return -1, "", fmt.Errorf("open %s: %w", dir, err)
		}
		fd = next
	}
	return fd, name, nil
}

// DirectStreamLocal serves direct-streamlocal@openssh.com (ssh -L to a
// Unix socket).
func DirectStreamLocal(ctx context.Context, c Conn, nch ssh.NewChannel) {
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
	if allow(ctx, c, Target{Kind: LocalSocket, Path: p}) != nil {
		nch.Reject(ssh.Prohibited, "socket forwarding to "+m.Path+": "+ErrNotAllowed.Error())
		return
	}
	conn, err := dialUserSocket(c, p)
	if err != nil {
		refused(c, LocalSocket, p, err.Error())
		nch.Reject(ssh.ConnectionFailed, "connect to "+m.Path+" failed")
		return
	}
	if ch, ok := accept(nch, conn); ok {
		pipe(ctx, c, ch, conn)
	}
}

// dialUserSocket connects to the socket at p as the local user.
func dialUserSocket(c Conn, p string) (net.Conn, error) {
	u, ids, err := localIDs(c)
	if err != nil {
		return nil, err
	}
	var conn net.Conn
	err = asUser(ids, func() error {
		dir, name, err := openSocketParent(p, u)
		if err != nil {
			return err
		}
		defer unix.Close(dir)
		fd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", name, err)
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return errors.New("not a socket")
		}
		conn, err = net.Dial("unix", fmt.Sprintf("/proc/self/fd/%d", fd))
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err // "connect: ...", without the /proc/self/fd name
		}
		return err
	})
	return conn, err
}

// streamLocalMsg is the payload of streamlocal-forward@openssh.com and its
// cancel.
type streamLocalMsg struct{ Path string }

// StreamLocalForward serves streamlocal-forward@openssh.com (ssh -R on a
// Unix socket).
func StreamLocalForward(ctx context.Context, c Conn, req *ssh.Request) (bool, []byte) {
	var m streamLocalMsg
	if ssh.Unmarshal(req.Payload, &m) != nil || m.Path == "" {
		return false, nil
	}
	p := path.Clean(m.Path)
	if allow(ctx, c, Target{Kind: RemoteSocket, Path: p}) != nil {
		return false, nil
	}
	st := c.ForwardState().open(ctx)
	if st == nil {
		return false, nil
	}
	ln, err := listenUserSocket(c, p)
	if err != nil {
		refused(c, RemoteSocket, p, err.Error())
		return false, nil
	}
	key := "unix:" + m.Path
	if !st.addListener(key, ln) {
		ln.Close()
		return false, nil
	}
	logger(c, RemoteSocket, p).Info("remote forward listening")
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
				openToClient(c, st, "forwarded-streamlocal@openssh.com", payload, conn, p)
			}()
		}
	}()
	return true, nil
}

// CancelStreamLocalForward serves cancel-streamlocal-forward@openssh.com.
func CancelStreamLocalForward(ctx context.Context, c Conn, req *ssh.Request) (bool, []byte) {
	var m streamLocalMsg
	if ssh.Unmarshal(req.Payload, &m) != nil {
		return false, nil
	}
	return c.ForwardState().removeListener("unix:" + m.Path), nil
}

// userSocketListener is a listening socket made for a user; Close removes
// the socket file, if it is still the one made.
type userSocketListener struct {
	*net.UnixListener
	ids      userIDs
	dir      int // the parent directory, O_PATH
	name     string
	dev, ino uint64
	once     sync.Once
}

// Close is safe to call more than once, concurrently (cancel, the accept
// loop and the conn's end may all close it). The socket file is removed as
// the user.
func (l *userSocketListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		asUser(l.ids, func() error {
			var st unix.Stat_t
			if unix.Fstatat(l.dir, l.name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Dev == l.dev && st.Ino == l.ino {
				unix.Unlinkat(l.dir, l.name, 0)
			}
			return nil
		})
		unix.Close(l.dir)
	})
	return err
}

// listenUserSocket makes a listening socket at p as the local user, mode
// 0600, as described at the top of this file.
func listenUserSocket(c Conn, p string) (*userSocketListener, error) {
	u, ids, err := localIDs(c)
	if err != nil {
		return nil, err
	}
	var l *userSocketListener
	err = asUser(ids, func() error {
		dir, name, err := openSocketParent(p, u)
		if err != nil {
			return err
		}
		ln, err := bindPrivately(dir, name, ids.uid, 0o600)
		if err != nil {
			unix.Close(dir)
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			ln.Close()
			unix.Close(dir)
			return err
		}
		l = &userSocketListener{UnixListener: ln, ids: ids, dir: dir, name: name, dev: st.Dev, ino: st.Ino}
		return nil
	})
	return l, err
}

// bindPrivately binds a Unix socket in a fresh 0700 directory made in dir,
// sets its mode, and renames it to dir/name without replacing anything
// there. The temporary directory is removed. Called as the user uid, who
// then owns the directory and the socket.
func bindPrivately(dir int, name string, uid uint32, mode uint32) (*net.UnixListener, error) {
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
	if st.Uid != uid || st.Mode&0o077 != 0 {
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
	if err := unix.Renameat2(tfd, "s", dir, name, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			err = errors.New("a file already exists at that path")
		} else {
			err = fmt.Errorf("rename into place: %w", err)
		}
		return fail(err)
	}
	return ln, nil
}
