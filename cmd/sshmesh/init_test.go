package main

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
)

// maxOwnInitBytes is what one of sshmesh's own packages may allocate while
// it is initialised. Every sshmesh process pays for every package's init
// (an nc per ssh login, a serve whatever its flags), so work that only a
// feature needs (a template, a table) is done on the feature's first use.
const maxOwnInitBytes = 4 << 10

// initLine is a line of GODEBUG=inittrace=1: "init PKG @T ms, C ms clock,
// B bytes, N allocs".
var initLine = regexp.MustCompile(`(?m)^init (\S+) @\S+ ms, \S+ ms clock, (\d+) bytes, (\d+) allocs$`)

// TestOwnPackagesInitLight runs the binary with the runtime's init trace and
// checks that none of sshmesh's own packages does real work at init.
func TestOwnPackagesInitLight(t *testing.T) {
	cmd := exec.Command(binPath, "keygen")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sshmesh keygen: %v\n%s", err, stderr.Bytes())
	}
	own := 0
	for _, m := range initLine.FindAllSubmatch(stderr.Bytes(), -1) {
		pkg := string(m[1])
		if pkg != "main" && !bytes.HasPrefix(m[1], []byte("github.com/sshmesh/sshmesh")) {
			continue
		}
		own++
		n, _ := strconv.Atoi(string(m[2]))
		if n > maxOwnInitBytes {
			t.Errorf("package %s allocates %d bytes (%s allocs) at init, more than %d: make that work lazy (sync.OnceValue)", pkg, n, m[3], maxOwnInitBytes)
		}
	}
	// Packages with nothing to initialise print no line; a few of ours
	// always have something (session's tables, the root package's).
	if own == 0 {
		t.Fatalf("no init line of an sshmesh package in the trace:\n%s", stderr.Bytes())
	}
}
