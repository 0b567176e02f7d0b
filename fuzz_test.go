package sshmesh

import (
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/internal/envrule"
	"github.com/sshmesh/sshmesh/policy"
)

// FuzzEnvRequest feeds arbitrary "env" request payloads through the same
// decoding and checks the server applies: nothing panics, and nothing a
// rule must never allow gets through, whatever acceptEnv says.
func FuzzEnvRequest(f *testing.F) {
	for _, kv := range [][2]string{{"LANG", "C.UTF-8"}, {"LD_PRELOAD", "/x.so"}, {"BASH_ENV", "/x"}, {"ld_preload", "x"},
		{"LC_ALL", "a\x00b"}, {"A\nB", "c"}, {"PATH", "/tmp"}, {"GIT_DIR", strings.Repeat("x", 40000)}} {
		f.Add(ssh.Marshal(struct{ Name, Value string }{kv[0], kv[1]}), "*")
	}
	f.Add([]byte{0, 0, 0, 9, 'x'}, "LC_*")
	f.Fuzz(func(t *testing.T, payload []byte, pattern string) {
		c := &serverConn{decision: policy.Decision{AcceptEnv: []string{pattern, "*"}}}
		var kv struct{ Name, Value string }
		if ssh.Unmarshal(payload, &kv) != nil {
			return
		}
		if !c.acceptEnv(kv.Name, kv.Value) {
			return
		}
		up := strings.ToUpper(kv.Name)
		switch {
		case strings.HasPrefix(up, "LD_"), strings.HasPrefix(up, "DYLD_"), up == "BASH_ENV", up == "ENV", up == "PATH":
			t.Fatalf("loader variable %q accepted", kv.Name)
		case kv.Name == "", strings.ContainsAny(kv.Name, "=\x00\n"), strings.ContainsRune(kv.Value, 0), len(kv.Value) > envrule.MaxValue:
			t.Fatalf("malformed %q=%q accepted", kv.Name, kv.Value)
		}
	})
}
