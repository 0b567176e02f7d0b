package session

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"testing"
)

// TestChildSignalsDefault: a server that ignores SIGHUP and SIGINT (started
// under nohup) still starts sessions whose SigIgn has neither.
func TestChildSignalsDefault(t *testing.T) {
	if os.Getenv("SESSION_SIGNAL_CHILD") == "1" {
		me, _ := user.Current()
		var out bytes.Buffer
		p, err := Start(context.Background(), Request{User: me.Username, Command: "grep SigIgn /proc/self/status", Stdout: &out, Stderr: os.Stderr})
		if err != nil {
			t.Fatal(err)
		}
		p.Wait()
		os.Stdout.Write(out.Bytes())
		return
	}
	// The child test process starts with SIGHUP and SIGINT ignored, as under
	// `trap "" HUP INT`.
	cmd := exec.Command("sh", "-c", `trap "" HUP INT; exec "$0" -test.run '^TestChildSignalsDefault$' -test.v`, os.Args[0])
	cmd.Env = append(os.Environ(), "SESSION_SIGNAL_CHILD=1", "HOME=/nonexistent")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	i := strings.Index(string(out), "SigIgn:")
	if i < 0 {
		t.Fatalf("no SigIgn line in %s", out)
	}
	mask, err := strconv.ParseUint(strings.Fields(string(out[i:]))[1], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	if mask&(1<<(1-1)|1<<(2-1)) != 0 { // SIGHUP=1, SIGINT=2
		t.Errorf("session child ignores signals %#x (SIGHUP/SIGINT inherited from the server)", mask)
	}
}
