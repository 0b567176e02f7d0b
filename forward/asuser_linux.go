package forward

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"unsafe"

	"github.com/sshmesh/sshmesh/session"
)

// Working with a user's files as the user: socket forwarding and the agent
// socket connect, bind, mkdir, chmod and unlink on the user's behalf, and
// do it with the user's credentials, as OpenSSH's sshd does (its session
// process runs as the user). So the kernel makes every access decision
// (mode bits, ACLs, LSMs), a service behind ssh -L sees the user's uid and
// gid in SO_PEERCRED, and what a bind makes is the user's.
//
// How: fn runs on a goroutine locked to its OS thread, which first sets its
// own thread's groups and effective gid and uid to the user's (raw
// setgroups, setresgid, setresuid: on Linux these act on the calling thread
// only, whereas syscall.Setuid and friends change every thread of the
// process), and sets them back after. The kernel's access checks, the
// owner of what the thread creates and SO_PEERCRED all follow the
// effective ids. The real and saved uid stay 0, which is what lets the
// thread switch back, and keeps the user from signalling the thread (the
// kernel checks a sender against the target's real and saved uid) even if
// it is the process's main thread. A thread that cannot switch back is
// never unlocked, so the runtime ends it (or parks it for good, the main
// thread) and nothing else runs with its ids. The runtime never clones a
// new thread from a locked one (its template thread does that), so no
// thread inherits the user's ids. File descriptors belong to the process:
// a socket made on that thread is used from anywhere once fn returns.
//
// Changing a thread's effective uid makes the kernel mark the process not
// dumpable (fs.suid_dumpable, 0 by default): no core dumps, and no ptrace
// without CAP_SYS_PTRACE, as for any setuid program. A server that is not
// root serves only its own user and runs fn as it is.

// userIDs is a user's uid, primary gid and groups.
type userIDs struct {
	uid, gid uint32
	groups   []uint32 // sorted, the primary gid included
}

func idsOf(u *session.User) (userIDs, error) {
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return userIDs{}, fmt.Errorf("user %s: %w", u.Name, err)
	}
	ids := userIDs{uid: uint32(uid), gid: uint32(gid), groups: []uint32{uint32(gid)}}
	for _, g := range u.Groups {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return userIDs{}, fmt.Errorf("user %s: group %q: %w", u.Name, g, err)
		}
		ids.groups = append(ids.groups, uint32(n))
	}
	slices.Sort(ids.groups)
	ids.groups = slices.Compact(ids.groups)
	return ids, nil
}

// errNotOwnUser refuses work for another user in a server that is not root.
var errNotOwnUser = errors.New("the server does not run as root, so it can only do this for its own user")

// asUser runs fn with ids' credentials, as described at the top of this
// file, and returns its error.
func asUser(ids userIDs, fn func() error) error {
	switch euid := uint32(os.Geteuid()); {
	case euid != 0 && euid != ids.uid:
		return errNotOwnUser
	case euid == ids.uid: // not root, or the user is root
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := becomeUser(ids)
		if err != nil {
			// Left locked: the thread ends with this goroutine.
			errc <- fmt.Errorf("switch to uid %d: %w", ids.uid, err)
			return
		}
		err = fn()
		if berr := back(); berr != nil {
			err = errors.Join(err, fmt.Errorf("switch back from uid %d: %w", ids.uid, berr))
		} else {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// keep is the id that setresuid and setresgid leave as it is ((uid_t)-1).
const keep = uintptr(^uint32(0))

// becomeUser sets the calling thread's groups and effective gid and uid to
// ids' (the uid last, since it drops the capabilities the others need),
// and returns the function that sets them back.
func becomeUser(ids userIDs) (back func() error, err error) {
	groups, err := syscall.Getgroups() // this thread's, as the raw calls below
	if err != nil {
		return nil, fmt.Errorf("getgroups: %w", err)
	}
	egid := uintptr(syscall.Getegid())
	if err := setGroups(ids.groups); err != nil {
		return nil, err
	}
	if _, _, e := syscall.RawSyscall(sysSetresgid, keep, uintptr(ids.gid), keep); e != 0 {
		return nil, fmt.Errorf("setresgid: %w", e)
	}
	if _, _, e := syscall.RawSyscall(sysSetresuid, keep, uintptr(ids.uid), keep); e != 0 {
		return nil, fmt.Errorf("setresuid: %w", e)
	}
	return func() error {
		// The saved uid is 0, so this is allowed, and it gives the
		// thread back its capabilities for the rest.
		if _, _, e := syscall.RawSyscall(sysSetresuid, keep, 0, keep); e != 0 {
			return fmt.Errorf("setresuid: %w", e)
		}
		if _, _, e := syscall.RawSyscall(sysSetresgid, keep, egid, keep); e != 0 {
			return fmt.Errorf("setresgid: %w", e)
		}
		gs := make([]uint32, len(groups))
		for i, g := range groups {
			gs[i] = uint32(g)
		}
		return setGroups(gs)
	}, nil
}

// setGroups sets the calling thread's supplementary groups.
func setGroups(groups []uint32) error {
	var list unsafe.Pointer
	if len(groups) > 0 {
		list = unsafe.Pointer(&groups[0])
	}
	if _, _, e := syscall.RawSyscall(sysSetgroups, uintptr(len(groups)), uintptr(list), 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	return nil
}

// asLocalUser runs fn, which makes sockets for the conn's local user (the
// TCP forwards' dials and listeners), with that user's credentials when the
// server is root, so that what it makes is the user's: a loopback service
// that trusts its client's uid (sock_diag, ident, an sshmesh proxy) sees
// the user, never root, and the kernel decides what the user may bind. A
// root server refuses when the local user is no account on this host
// (there is no one to act as but root). A server that is not root runs fn
// with its own rights, the only ones it has.
func asLocalUser(c Conn, fn func() error) error {
	if os.Geteuid() != 0 {
		return fn()
	}
	_, ids, err := localIDs(c)
	if err != nil {
		return err
	}
	return asUser(ids, fn)
}

// localIDs returns c's local account and its ids, for acting as it.
func localIDs(c Conn) (*session.User, userIDs, error) {
	u, err := c.LocalAccount()
	if err != nil {
		return nil, userIDs{}, fmt.Errorf("no local account to act as: %w", err)
	}
	ids, err := idsOf(u)
	return u, ids, err
}
