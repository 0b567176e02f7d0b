//go:build unix

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sshmesh/sshmesh/meshkey"
)

// A mesh node's key belongs in one process at a time: WireGuard follows a
// peer to wherever its latest packets come from, so when two processes of
// this machine run the same key (nc and a proxy, two ncs) and both talk to
// one server, the server sends everything to the one that spoke last, and
// the other's conns stall. nc and proxy announce themselves in the user's
// private runtime dir, one file per process named by a digest of the key
// and held locked for the process's life, and warn about the others.

// keyHolder is another live process of this user running the same key.
type keyHolder struct {
	PID  int
	What string // "nc" or "proxy", and its wg-quick file
}

// holdKey announces that this process (what: "nc laptop.conf") runs key,
// and returns the other live processes of this user that run it. release
// ends the announcement; it is safe to skip (the lock dies with the
// process). Failures only turn the detection off.
func holdKey(key meshkey.Public, what string) (others []keyHolder, release func()) {
	release = func() {}
	dir, err := privateRuntimeDir()
	if err != nil {
		return nil, release
	}
	sum := sha256.Sum256(key[:])
	prefix := "key-" + hex.EncodeToString(sum[:8]) + "-"
	mine := filepath.Join(dir, prefix+strconv.Itoa(os.Getpid()))
	f, err := os.OpenFile(mine, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, release
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, release
	}
	f.WriteString(what + "\n")
	release = func() {
		os.Remove(mine)
		f.Close()
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		name := e.Name()
		pid, err := strconv.Atoi(strings.TrimPrefix(name, prefix))
		if !strings.HasPrefix(name, prefix) || err != nil || pid == os.Getpid() {
			continue
		}
		if h, alive := lockedBy(filepath.Join(dir, name)); alive {
			h.PID = pid
			others = append(others, h)
		}
	}
	return others, release
}

// lockedBy reports whether a live process holds the announcement at path,
// removing it when its process is gone.
func lockedBy(path string) (keyHolder, bool) {
	f, err := os.Open(path)
	if err != nil {
		return keyHolder{}, false
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		os.Remove(path) // stale: its process has ended
		return keyHolder{}, false
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return keyHolder{}, false
	}
	b := make([]byte, 512)
	n, _ := f.Read(b)
	return keyHolder{What: strings.TrimSpace(string(b[:n]))}, true
}

// sameKeyWarning explains others to the user of a process that runs the
// same key ("" when there are none).
func sameKeyWarning(others []keyHolder) string {
	if len(others) == 0 {
		return ""
	}
	var names []string
	for _, o := range others {
		names = append(names, fmt.Sprintf("%s (pid %d)", o.What, o.PID))
	}
	return "another sshmesh process of yours runs this node's key: " + strings.Join(names, ", ") + ". " +
		"A server follows whichever of them spoke last and sends everything there, so the other's connections to it can stall " +
		"(a check login may hang after its approval). For check approvals, open the .localhost link that nc prints: no proxy is needed. " +
		"For a browser on the mesh and parallel logins, give the proxy a key of its own, or share one ssh connection (ControlMaster)"
}
