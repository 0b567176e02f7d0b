package sshmesh_test

import (
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// threadIDs returns the Uid, Gid and Groups lines of a /proc status file.
func threadIDs(t *testing.T, status string) []string {
	t.Helper()
	b, err := os.ReadFile(status)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range strings.Split(string(b), "\n") {
		if k, _, _ := strings.Cut(line, ":"); k == "Uid" || k == "Gid" || k == "Groups" {
			ids = append(ids, strings.Join(strings.Fields(line), " "))
		}
	}
	return ids
}

// TestAsUser: fn runs on a thread with the user's effective ids and only
// its groups, its real and saved uid still root's; once asUser returns, no
// thread of the process has any of the user's ids.
func TestAsUser(t *testing.T) {
	sshmeshtest.NeedRoot(t)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := sshmesh.AsUser("nobody", func() error {
		got = threadIDs(t, "/proc/thread-self/status")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{ // real, effective, saved, file system
		"Uid: 0 " + nobody.Uid + " 0 " + nobody.Uid,
		"Gid: 0 " + nobody.Gid + " 0 " + nobody.Gid,
		"Groups: " + nobody.Gid,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ids inside asUser (-want +got):\n%s", diff)
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	for _, st := range tasks {
		ids := threadIDs(t, st)
		if len(ids) == 3 && (ids[0] != "Uid: 0 0 0 0" || ids[1] != "Gid: 0 0 0 0" || strings.Contains(ids[2]+" ", " "+nobody.Gid+" ")) {
			t.Errorf("after asUser, %s: %v", st, ids)
		}
	}
}
