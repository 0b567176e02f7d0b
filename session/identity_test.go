//go:build linux

package session

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIdentity(t *testing.T) {
	u := testUser(t)
	for _, pty := range []bool{false, true} {
		t.Run(map[bool]string{false: "pipes", true: "pty"}[pty], func(t *testing.T) {
			r := Request{User: u.Name, Command: "id -u; id -g; id -G; id -un; pwd; grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status"}
			if pty {
				r.Pty = &Pty{Term: "xterm"}
			}
			res := run(t, testConfig(t), r)
			lines := strings.Split(strings.ReplaceAll(strings.TrimSpace(res.stdout), "\r\n", "\n"), "\n")
			if len(lines) < 8 {
				t.Fatalf("output %q, stderr %q", res.stdout, res.stderr)
			}
			groups := strings.Fields(lines[2])
			slices.Sort(groups)
			want := slices.Clone(u.Groups)
			slices.Sort(want)
			if diff := cmp.Diff([]string{u.Uid, u.Gid, strings.Join(want, " "), u.Name, u.Home},
				[]string{lines[0], lines[1], strings.Join(groups, " "), lines[3], lines[4]}); diff != "" {
				t.Errorf("uid, gid, groups, name, cwd (-want +got):\n%s", diff)
			}
			if len(u.Groups) < 2 {
				t.Errorf("test user has groups %v, want its supplementary group too", u.Groups)
			}
			for _, l := range lines[5:] {
				k, v, _ := strings.Cut(l, ":")
				if k != "CapBnd" && strings.TrimSpace(v) != "0000000000000000" {
					t.Errorf("%s = %s, want no capabilities", k, strings.TrimSpace(v))
				}
			}
			if res.exit != (Exit{}) {
				t.Errorf("exit = %+v", res.exit)
			}
		})
	}
}

func TestUnknownUser(t *testing.T) {
	_, err := Start(t.Context(), Request{User: "sshmesh-nosuchuser", Command: "true"})
	var ce *ClientError
	if !errors.Is(err, ErrUnknownUser) || !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a ClientError wrapping ErrUnknownUser", err)
	}
	if want := `There is no user "sshmesh-nosuchuser" on this host.`; ce.Msg != want {
		t.Errorf("Msg = %q, want %q", ce.Msg, want)
	}
}

func TestPermitted(t *testing.T) {
	root := &User{Name: "root", Uid: "0"}
	alice := &User{Name: "alice", Uid: "1000"}
	bob := &User{Name: "bob", Uid: "1001"}
	alias := &User{Name: "alice2", Uid: "1000"}
	tests := []struct {
		name            string
		current, target *User
		ok              bool
	}{
		{"root serves root", root, root, true},
		{"root serves anyone", root, alice, true},
		{"user serves itself", alice, alice, true},
		{"same uid other name", alice, alias, true},
		{"user cannot serve another", alice, bob, false},
		{"user cannot serve root", alice, root, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := permitted(tt.current, tt.target)
			if (err == nil) != tt.ok {
				t.Fatalf("permitted = %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				var ce *ClientError
				if !errors.Is(err, ErrNotPermitted) || !errors.As(err, &ce) || !strings.Contains(ce.Msg, "not run as root") {
					t.Errorf("err = %#v, want a ClientError wrapping ErrNotPermitted that says why", err)
				}
			}
		})
	}
}

// A non-root server asked for another user is refused before anything
// starts.
func TestStartNotPermitted(t *testing.T) {
	cfg := systemConfig()
	cfg.current = func() (*User, error) { return &User{Name: "nobody", Uid: "65534"}, nil }
	_, err := start(t.Context(), Request{User: "root", Command: "true"}, cfg)
	if !errors.Is(err, ErrNotPermitted) {
		t.Fatalf("err = %v, want ErrNotPermitted", err)
	}
}

// A non-root server serves its own user: run as the current user with no
// credential switch.
func TestStartOwnUser(t *testing.T) {
	me, err := currentUser()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.current = func() (*User, error) { return &User{Name: me.Name, Uid: "4294967294"}, nil }
	if _, err := start(t.Context(), Request{User: me.Name, Command: "true"}, cfg); !errors.Is(err, ErrNotPermitted) {
		t.Fatalf("other uid: err = %v, want ErrNotPermitted", err)
	}
	if os.Geteuid() == 0 {
		return // the root path is tested everywhere else
	}
	res := run(t, testConfig(t), Request{User: me.Name, Command: "id -u"})
	if strings.TrimSpace(res.stdout) != me.Uid {
		t.Errorf("id -u = %q, want %s", res.stdout, me.Uid)
	}
}

// TestAccountChangedSinceLogin: a Request with the uid its account had
// when the login was decided runs only as that uid: if the account now
// resolves to another (uid 0 among them), Start refuses, starting nothing.
func TestAccountChangedSinceLogin(t *testing.T) {
	u, err := LookupUser("root")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(t.Context(), Request{User: u.Name, UID: "65534", Command: "true"})
	var ce *ClientError
	if !errors.As(err, &ce) || !strings.Contains(ce.Msg, "changed since the login") {
		t.Fatalf("Start as %s (uid %s) with UID 65534 = %v; want a refusal", u.Name, u.Uid, err)
	}
}
