package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

func TestServeTailnetNeedsItsProgram(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"serve", "--tailnet", "--policy", "p.hujson"}, stdio{strings.NewReader(""), &out, &errOut})
	if code == 0 || !strings.Contains(errOut.String(), "needs the sshmesh-tailnet program") {
		t.Fatalf("serve --tailnet without sshmesh-tailnet: exit %d, stderr %q; want an error naming the program", code, errOut.String())
	}
}

// TestServeTailnetRunsItsProgram: serve --tailnet and recorder --tailnet run
// sshmesh-tailnet with their command and arguments.
func TestServeTailnetRunsItsProgram(t *testing.T) {
	if runtime.GOOS == "windows" {
		testkit.SkipOrFail(t, "a shell script stands in for the program, and Windows runs none")
	}
	dir := t.TempDir()
	fake := "#!/bin/sh\necho \"$@\"\nexit 3\n"
	if err := os.WriteFile(filepath.Join(dir, "sshmesh-tailnet"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	for _, args := range [][]string{
		{"serve", "--tailnet", "--policy", "p.hujson", "--tags", "tag:server"},
		{"recorder", "--tailnet", "--dir", "recs", "--senders", "tag:server", "--tags", "tag:recorder"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, stdio{strings.NewReader(""), &out, &errOut})
		if want := strings.Join(args, " ") + "\n"; code != 3 || out.String() != want {
			t.Errorf("%s --tailnet: exit %d, stdout %q, stderr %q; want the program run with %s and the arguments (%q), its exit status passed on", args[0], code, out.String(), errOut.String(), args[0], want)
		}
	}
}

func TestWantsTailnet(t *testing.T) {
	for args, want := range map[string]bool{
		"--tailnet --policy p": true, "-tailnet": true, "--tailnet=true": true,
		"--wg c --policy p": false, "-- --tailnet": false, "--tailnet=false": false,
	} {
		if got := wantsTailnet(strings.Fields(args)); got != want {
			t.Errorf("wantsTailnet(%q) = %v, want %v", args, got, want)
		}
	}
}
