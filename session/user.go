package session

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"time"
)

// User is a local account.
type User struct {
	Name   string   // login name
	Uid    string   // decimal user id
	Gid    string   // decimal primary group id
	Groups []string // decimal ids of all its groups, the primary one included
	Home   string   // home directory
	Shell  string   // login shell; /bin/sh when the account has none
}

// LookupUser looks up a local account by name with os/user, falling back
// to getent(1) for accounts os/user cannot see (NSS sources when built
// without cgo). A missing account gives a *ClientError wrapping
// ErrUnknownUser.
func LookupUser(name string) (*User, error) {
	unknown := &ClientError{Msg: fmt.Sprintf("There is no user %q on this host.", name), Err: ErrUnknownUser}
	if name == "" || strings.ContainsAny(name, ":\n\x00") {
		return nil, unknown
	}
	var u *User
	if ou, err := user.Lookup(name); err == nil {
		u = &User{Name: ou.Username, Uid: ou.Uid, Gid: ou.Gid, Home: ou.HomeDir}
		if ent, err := passwdEntry(name); err == nil {
			u.Shell = ent.Shell
		}
		if gids, err := ou.GroupIds(); err == nil {
			u.Groups = gids
		}
	} else {
		ent, gerr := passwdEntry(name)
		if gerr != nil {
			var unk user.UnknownUserError
			if errors.As(err, &unk) && errors.Is(gerr, ErrUnknownUser) {
				return nil, unknown
			}
			return nil, fmt.Errorf("session: look up user %q: %w", name, errors.Join(err, gerr))
		}
		u = ent
	}
	if u.Groups == nil {
		gids, err := getentGroups(name)
		if err != nil {
			return nil, fmt.Errorf("session: groups of user %q: %w", name, err)
		}
		u.Groups = gids
	}
	if !contains(u.Groups, u.Gid) {
		u.Groups = append([]string{u.Gid}, u.Groups...)
	}
	if u.Shell == "" {
		u.Shell = "/bin/sh"
	}
	return u, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// passwdEntry finds name in /etc/passwd, then with `getent passwd`.
func passwdEntry(name string) (*User, error) {
	if b, err := os.ReadFile("/etc/passwd"); err == nil {
		if u := parsePasswd(b, name); u != nil {
			return u, nil
		}
	}
	out, err := getent("passwd", name)
	if err != nil {
		return nil, err
	}
	if u := parsePasswd(out, name); u != nil {
		return u, nil
	}
	return nil, ErrUnknownUser
}

// parsePasswd returns the passwd(5) entry for name in b, or nil.
func parsePasswd(b []byte, name string) *User {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) != 7 || f[0] != name {
			continue
		}
		if _, err := strconv.ParseUint(f[2], 10, 32); err != nil {
			continue
		}
		if _, err := strconv.ParseUint(f[3], 10, 32); err != nil {
			continue
		}
		return &User{Name: f[0], Uid: f[2], Gid: f[3], Home: f[5], Shell: f[6]}
	}
	return nil
}

// getentGroups lists name's groups with `getent initgroups`.
func getentGroups(name string) ([]string, error) {
	out, err := getent("initgroups", name)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(out))
	if len(f) == 0 || f[0] != name {
		return nil, fmt.Errorf("getent initgroups %s: unexpected output %q", name, out)
	}
	return f[1:], nil
}

// getent runs getent(1); exit status 2 (key not found) is ErrUnknownUser.
func getent(db, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getent", db, "--", key).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		return nil, ErrUnknownUser
	}
	if err != nil {
		return nil, fmt.Errorf("getent %s: %w", db, err)
	}
	return out, nil
}

// permitted decides whether a server running as current may start a
// session as target: root may serve anyone, everyone else only itself.
func permitted(current, target *User) error {
	if current.Uid == "0" || current.Uid == target.Uid {
		return nil
	}
	return &ClientError{
		Msg: fmt.Sprintf("This server does not run as root, so it can only start sessions as its own user %q, not as %q.",
			current.Name, target.Name),
		Err: ErrNotPermitted,
	}
}
