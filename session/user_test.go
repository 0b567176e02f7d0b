//go:build linux

package session

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePasswd(t *testing.T) {
	b := []byte("root:x:0:0:root:/root:/bin/bash\n" +
		"broken:x:notanumber:0::/:/bin/sh\n" +
		"short:x:1:1\n" +
		"alice:x:1000:1000:Alice,,,:/home/alice:\n")
	if diff := cmp.Diff(&User{Name: "root", Uid: "0", Gid: "0", Home: "/root", Shell: "/bin/bash"}, parsePasswd(b, "root")); diff != "" {
		t.Errorf("root (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&User{Name: "alice", Uid: "1000", Gid: "1000", Home: "/home/alice"}, parsePasswd(b, "alice")); diff != "" {
		t.Errorf("alice (-want +got):\n%s", diff)
	}
	for _, name := range []string{"broken", "short", "nobody-here", ""} {
		if u := parsePasswd(b, name); u != nil {
			t.Errorf("%q: got %+v, want nil", name, u)
		}
	}
}

func TestLookupUserRoot(t *testing.T) {
	u, err := LookupUser("root")
	if err != nil {
		t.Fatal(err)
	}
	if u.Uid != "0" || u.Gid != "0" || u.Home == "" || u.Shell == "" || !contains(u.Groups, "0") {
		t.Errorf("root = %+v", u)
	}
	// The getent fallback sees the same groups.
	g, err := getentGroups("root")
	if err != nil {
		t.Fatal(err)
	}
	for _, gid := range g {
		if !contains(u.Groups, gid) {
			t.Errorf("getent initgroups root has %s, LookupUser has %v", gid, u.Groups)
		}
	}
	for _, bad := range []string{"", "a:b", "x\n"} {
		if _, err := LookupUser(bad); err == nil {
			t.Errorf("LookupUser(%q) = nil error", bad)
		}
	}
}
