package sshmesh

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/sshmesh/sshmesh/session"
)

// Agent forwarding (ssh -A): a socket the session's programs reach through
// SSH_AUTH_SOCK, each conn to it an auth-agent@openssh.com channel to the
// client, whose agent answers.
//
// The socket lives in a fresh directory /tmp/sshmesh-agent-XXXXXXXX/. The
// directory is made by root with mode 0700 and the socket is bound, set to
// 0600 and given to the user inside it while only root can reach it; only
// then is the directory given to the user. So no other user can ever reach
// the socket, and nobody can swap anything in while root still works by
// name. Removal goes through fds kept from creation (the user owns the
// directory then and could move it), removing only what was made.

// agentSocket is one conn's forwarded agent.
type agentSocket struct {
	ln       *net.UnixListener
	path     string // the socket's path, for SSH_AUTH_SOCK
	tmp      int    // /tmp, O_PATH
	dir      int    // the directory, O_PATH
	dirName  string // its name in /tmp
	dev, ino uint64 // the directory's
	sdev     uint64 // the socket's
	sino     uint64
}

// agentDirRoot is where agent directories are made.
const agentDirRoot = "/tmp"

// newAgentSocket makes a listening agent socket for the local user u.
func newAgentSocket(u *session.User) (_ *agentSocket, err error) {
	ids, err := idsOf(u)
	if err != nil {
		return nil, err
	}
	dirPath, err := os.MkdirTemp(agentDirRoot, "sshmesh-agent-")
	if err != nil {
		return nil, err
	}
	a := &agentSocket{tmp: -1, dir: -1, dirName: filepath.Base(dirPath), path: filepath.Join(dirPath, "agent.sock")}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if a.tmp, err = unix.Open(agentDirRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return nil, err
	}
	if a.dir, err = unix.Openat(a.tmp, a.dirName, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err = unix.Fstat(a.dir, &st); err != nil {
		return nil, err
	}
	a.dev, a.ino = st.Dev, st.Ino
	// Bind through the directory's fd: root-owned and 0700 until below.
	if a.ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("/proc/self/fd/%d/agent.sock", a.dir), Net: "unix"}); err != nil {
		return nil, err
	}
	a.ln.SetUnlinkOnClose(false)
	if err = unix.Fchmodat(a.dir, "agent.sock", 0o600, 0); err != nil {
		return nil, err
	}
	if err = unix.Fchownat(a.dir, "agent.sock", int(ids.uid), int(ids.gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	if err = unix.Fstatat(a.dir, "agent.sock", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	a.sdev, a.sino = st.Dev, st.Ino
	// Last: the directory becomes the user's (still 0700).
	if err = unix.Fchownat(a.tmp, a.dirName, int(ids.uid), int(ids.gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	return a, nil
}

// Close stops listening and removes the socket and its directory, if they
// are still the ones made.
func (a *agentSocket) Close() error {
	var err error
	if a.ln != nil {
		err = a.ln.Close()
	}
	if a.dir >= 0 {
		var st unix.Stat_t
		if unix.Fstatat(a.dir, "agent.sock", &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Dev == a.sdev && st.Ino == a.sino {
			unix.Unlinkat(a.dir, "agent.sock", 0)
		}
		unix.Close(a.dir)
		a.dir = -1
	}
	if a.tmp >= 0 {
		var st unix.Stat_t
		if unix.Fstatat(a.tmp, a.dirName, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Dev == a.dev && st.Ino == a.ino {
			// Fails if the user left files in it; then it stays, theirs.
			unix.Unlinkat(a.tmp, a.dirName, unix.AT_REMOVEDIR)
		}
		unix.Close(a.tmp)
		a.tmp = -1
	}
	return err
}

// agentRequest serves auth-agent-req@openssh.com: where the rule (or
// Server.Forwarding) allows it, it makes the conn's agent socket (one per
// conn, shared by its sessions) and puts SSH_AUTH_SOCK in this session's
// environment.
func (s *Session) agentRequest(started bool) bool {
	c := s.conn
	if started {
		c.forwardRefused(Agent, "", "requested after the session started")
		return false
	}
	if c.allowForward(s.ctx, ForwardRequest{Kind: Agent}) != nil {
		return false
	}
	st := c.forwards(s.ctx)
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return false
	}
	if st.agent == nil {
		u, err := session.LookupUser(c.decision.LocalUser)
		var a *agentSocket
		if err == nil {
			a, err = newAgentSocket(u)
		}
		if err != nil {
			c.srv.logger().Warn("agent forwarding failed", c.forwardAttrs(Agent, "", "err", err)...)
			return false
		}
		st.agent = a
		c.srv.logger().Info("agent forwarding", c.forwardAttrs(Agent, a.path)...)
		st.wg.Add(1)
		go func() {
			defer st.wg.Done()
			for {
				conn, err := a.ln.Accept()
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() && st.ctx.Err() == nil {
						continue
					}
					return
				}
				st.wg.Add(1)
				go func() {
					defer st.wg.Done()
					c.openToClient(st, "auth-agent@openssh.com", nil, conn, a.path)
				}()
			}
		}()
	}
	s.extraEnv = append(s.extraEnv, "SSH_AUTH_SOCK="+st.agent.path)
	return true
}
