package forward

import (
	"context"
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
// The socket lives in a fresh directory /tmp/sshmesh-agent-XXXXXXXX/, made
// (0700) and bound in (0600) with the user's credentials (asUser,
// asuser_linux.go), as OpenSSH does: both are the user's from the start, the
// kernel decides the access, and the agent's clients see the user's uid in
// SO_PEERCRED. Removal, also as the user, goes through fds kept from
// creation, removing only what was made.

// agentSocket is one conn's forwarded agent.
type agentSocket struct {
	ln       *net.UnixListener
	ids      userIDs
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

// newAgentSocket makes a listening agent socket as the local user u.
func newAgentSocket(u *session.User) (*agentSocket, error) {
	ids, err := idsOf(u)
	if err != nil {
		return nil, err
	}
	a := &agentSocket{ids: ids, tmp: -1, dir: -1}
	err = asUser(ids, a.listen)
	if err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// listen makes a's directory and socket; it runs as the user.
func (a *agentSocket) listen() (err error) {
	dirPath, err := os.MkdirTemp(agentDirRoot, "sshmesh-agent-")
	if err != nil {
		return err
	}
	a.dirName, a.path = filepath.Base(dirPath), filepath.Join(dirPath, "agent.sock")
	if a.tmp, err = unix.Open(agentDirRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return err
	}
	if a.dir, err = unix.Openat(a.tmp, a.dirName, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
		return err
	}
	var st unix.Stat_t
	if err = unix.Fstat(a.dir, &st); err != nil {
		return err
	}
	if st.Uid != a.ids.uid || st.Mode&0o077 != 0 {
		return errors.New("agent directory was replaced")
	}
	a.dev, a.ino = st.Dev, st.Ino
	// Bind through the directory's fd: 0700, the user's.
	if a.ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("/proc/self/fd/%d/agent.sock", a.dir), Net: "unix"}); err != nil {
		return err
	}
	a.ln.SetUnlinkOnClose(false)
	if err = unix.Fchmodat(a.dir, "agent.sock", 0o600, 0); err != nil {
		return err
	}
	if err = unix.Fstatat(a.dir, "agent.sock", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	a.sdev, a.sino = st.Dev, st.Ino
	return nil
}

// Close stops listening and removes, as the user, the socket and its
// directory, if they are still the ones made.
func (a *agentSocket) Close() error {
	var err error
	if a.ln != nil {
		err = a.ln.Close()
	}
	asUser(a.ids, func() error {
		if a.dir >= 0 && a.sino != 0 {
			var st unix.Stat_t
			if unix.Fstatat(a.dir, "agent.sock", &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Dev == a.sdev && st.Ino == a.sino {
				unix.Unlinkat(a.dir, "agent.sock", 0)
			}
		}
		if a.tmp >= 0 && a.ino != 0 {
			var st unix.Stat_t
			if unix.Fstatat(a.tmp, a.dirName, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Dev == a.dev && st.Ino == a.ino {
				// Fails if the user left files in it; then it stays, theirs.
				unix.Unlinkat(a.tmp, a.dirName, unix.AT_REMOVEDIR)
			}
		}
		return nil
	})
	if a.dir >= 0 {
		unix.Close(a.dir)
		a.dir = -1
	}
	if a.tmp >= 0 {
		unix.Close(a.tmp)
		a.tmp = -1
	}
	return err
}

// AgentRequest serves auth-agent-req@openssh.com, a session request:
// where the server allows it, it makes the conn's agent socket (one per
// conn, shared by its sessions) and returns its path, for SSH_AUTH_SOCK in
// the session's environment. started tells whether the session's shell,
// command or subsystem has started: then it is too late, and refused. ctx
// is the session's.
func AgentRequest(ctx context.Context, c Conn, started bool) (socket string, ok bool) {
	if started {
		refused(c, Agent, "", "requested after the session started")
		return "", false
	}
	if allow(ctx, c, Target{Kind: Agent}) != nil {
		return "", false
	}
	st := c.ForwardState().open(ctx)
	if st == nil {
		return "", false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return "", false
	}
	if st.agent == nil {
		u, err := c.LocalAccount()
		var a *agentSocket
		if err == nil {
			a, err = newAgentSocket(u)
		}
		if err != nil {
			logger(c, Agent, "").Warn("agent forwarding failed", "err", err)
			return "", false
		}
		st.agent = a
		logger(c, Agent, a.path).Info("agent forwarding")
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
					openToClient(c, st, "auth-agent@openssh.com", nil, conn, a.path)
				}()
			}
		}()
	}
	return st.agent.path, true
}
