package forward

import (
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/session"
)

// threadIDs returns the Uid, Gid, Groups and CapEff lines of a /proc status
// file.
func threadIDs(t *testing.T, status string) []string {
	t.Helper()
	b, err := os.ReadFile(status)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range strings.Split(string(b), "\n") {
		if k, _, _ := strings.Cut(line, ":"); k == "Uid" || k == "Gid" || k == "Groups" || k == "CapEff" {
			ids = append(ids, strings.Join(strings.Fields(line), " "))
		}
	}
	return ids
}

// TestAsUser: fn runs on a thread with the user's effective ids and only
// its groups, its real and saved uid still root's; once asUser returns, no
// thread of the process has any of the user's ids.
func TestAsUser(t *testing.T) {
	testkit.NeedRoot(t)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	u, err := session.LookupUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := idsOf(u)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := asUser(ids, func() error {
		got = threadIDs(t, "/proc/thread-self/status")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{ // real, effective, saved, file system
		"Uid: 0 " + nobody.Uid + " 0 " + nobody.Uid,
		"Gid: 0 " + nobody.Gid + " 0 " + nobody.Gid,
		"Groups: " + nobody.Gid,
		"CapEff: 0000000000000000",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ids inside asUser (-want +got):\n%s", diff)
	}
	// Every thread is as the process was: the one that switched is back.
	proc := threadIDs(t, "/proc/self/status")
	if !strings.HasPrefix(proc[0], "Uid: 0 0 0 0") {
		t.Fatalf("the process is not root: %v", proc)
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/status")
	for _, st := range tasks {
		if diff := cmp.Diff(proc, threadIDs(t, st)); diff != "" {
			t.Errorf("after asUser, %s (-process +thread):\n%s", st, diff)
		}
	}
}
