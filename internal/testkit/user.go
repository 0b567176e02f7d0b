package testkit

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"testing"
)

// User is a local account made for one test.
type User struct {
	Name     string
	Group    string // its supplementary group; "" without UserOptions.Group
	UID, GID int
	Home     string
}

// UserOptions say what kind of account NewUser makes. The zero value is a
// user with a home under /home and bash as its shell.
type UserOptions struct {
	// Shell is the login shell; "" means /bin/bash.
	Shell string

	// Group adds a supplementary group of the user's own, made for the
	// test and removed after the user.
	Group bool

	// RootAlias makes a toor-style alias of root instead: uid and gid 0
	// under the new name, /root as its home, no home or group created.
	RootAlias bool
}

// NewUser creates a local user sshmesh-t<random> (useradd) and removes it
// with its home when the test ends (userdel -r; an alias of root is
// removed without touching /root). It needs root, by the skip-or-fail rule.
// A user that cannot be removed fails the test, with the user's processes
// listed: a process left behind is a session that did not end.
func NewUser(tb testing.TB, opt UserOptions) *User {
	tb.Helper()
	NeedRoot(tb)
	b := make([]byte, 4)
	rand.Read(b)
	sfx := hex.EncodeToString(b)
	u := &User{Name: "sshmesh-t" + sfx}
	shell := opt.Shell
	if shell == "" {
		shell = "/bin/bash"
	}
	args := []string{"-m", "-s", shell}
	if opt.Group && !opt.RootAlias {
		u.Group = "sshmesh-g" + sfx
		mustRun(tb, "groupadd", u.Group)
		tb.Cleanup(func() {
			if out, err := exec.Command("groupdel", u.Group).CombinedOutput(); err != nil {
				tb.Errorf("groupdel %s: %v %s", u.Group, err, out)
			}
		})
		args = append(args, "-G", u.Group)
	}
	del := []string{"-r", u.Name}
	if opt.RootAlias {
		args = []string{"-o", "-u", "0", "-g", "0", "-M", "-N", "-d", "/root", "-s", shell}
		del = []string{"-f", u.Name}
	}
	mustRun(tb, "useradd", append(args, u.Name)...)
	tb.Cleanup(func() {
		var unknown user.UnknownUserError
		if _, err := user.Lookup(u.Name); errors.As(err, &unknown) {
			return // the test removed it itself
		}
		if out, err := exec.Command("userdel", del...).CombinedOutput(); err != nil {
			ps, _ := exec.Command("ps", "-o", "pid,args", "-u", u.Name).CombinedOutput()
			tb.Errorf("userdel %s: %v %s\nprocesses of the user:\n%s", strings.Join(del, " "), err, out, ps)
		}
	})
	pw, err := user.Lookup(u.Name)
	if err != nil {
		tb.Fatal(err)
	}
	u.UID, _ = strconv.Atoi(pw.Uid)
	u.GID, _ = strconv.Atoi(pw.Gid)
	u.Home = pw.HomeDir
	return u
}

func mustRun(tb testing.TB, name string, args ...string) {
	tb.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
