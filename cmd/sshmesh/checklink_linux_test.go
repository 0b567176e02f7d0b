package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// TestLocalLinkOtherUser: another local user gets 403 from the link (on
// Linux, where the kernel says who owns the client's socket).
func TestLocalLinkOtherUser(t *testing.T) {
	testkit.NeedRoot(t)
	curl, err := exec.LookPath("curl")
	if err != nil {
		testkit.SkipOrFail(t, "needs curl")
	}
	l, _ := startTestLink(t)
	u := testkit.NewUser(t, testkit.UserOptions{})
	host := strings.TrimPrefix(strings.TrimSuffix(l.URL, l.prefix), "http://")
	cmd := exec.Command(curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: "+host, "http://"+l.ln[0].Addr().String()+l.prefix)
	runAs(cmd, u.UID, u.GID)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl as %s: %v", u.Name, err)
	}
	if string(out) != "403" {
		t.Errorf("another local user got %s, want 403", out)
	}
	if code, _ := linkDo(t, l, "GET", l.prefix, "", ""); code != 200 {
		t.Errorf("the link's own user got %d", code)
	}
}
