package meshkey_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/meshkey"
)

// A key pair printed by `wg genkey | tee /dev/stderr | wg pubkey`.
const (
	wgPriv = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	wgPub  = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
)

func TestPublicOfKnownPair(t *testing.T) {
	k, err := meshkey.ParsePrivate(wgPriv)
	if err != nil {
		t.Fatal(err)
	}
	if got := k.Public().String(); got != wgPub {
		t.Errorf("Public() = %s, want %s", got, wgPub)
	}
	if k.Base64() != wgPriv {
		t.Errorf("Base64 does not round-trip")
	}
	p, err := meshkey.ParsePublic(" " + wgPub + "\n")
	if err != nil || p != k.Public() {
		t.Errorf("ParsePublic: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty private key"},
		{"abc", "is 3 characters of text, want 44"},
		{strings.Repeat("A", 43) + "!", "not valid base64 (bad character at offset 43)"},
		{strings.Repeat("A", 44), "decodes to 33 bytes, want 32"},
	} {
		_, err := meshkey.ParsePrivate(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePrivate(%q) = %v, want error containing %q", tc.in, err, tc.want)
		}
		if tc.in != "" && err != nil && strings.Contains(err.Error(), tc.in) {
			t.Errorf("error %q echoes the key text", err)
		}
	}
	// A private key typed where a public one goes is still not echoed.
	if _, err := meshkey.ParsePublic(wgPriv[:40]); err == nil || strings.Contains(err.Error(), wgPriv[:40]) {
		t.Errorf("ParsePublic error %v", err)
	}
}

func TestPrivateRedacted(t *testing.T) {
	k, _ := meshkey.ParsePrivate(wgPriv)
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "key", k)
	fmt.Fprintf(&buf, "%v %s %+v %#v %x %q %d", k, k, k, k, k, k, k)
	fmt.Fprint(&buf, k, []meshkey.Private{k}, struct{ K meshkey.Private }{k})
	if _, err := json.Marshal(struct{ K meshkey.Private }{k}); err == nil {
		t.Error("json.Marshal of a private key succeeded")
	}
	out := buf.String()
	for _, leak := range []string{wgPriv, wgPriv[:10], fmt.Sprintf("%x", [32]byte(k))[:16]} {
		if strings.Contains(out, leak) {
			t.Fatalf("private key leaked in %q", out)
		}
	}
	if !strings.Contains(out, "redacted") {
		t.Errorf("no redaction marker in %q", out)
	}
}

func TestNewPrivateClamped(t *testing.T) {
	a, _ := meshkey.NewPrivate()
	b, _ := meshkey.NewPrivate()
	if a == b || a.IsZero() {
		t.Fatal("NewPrivate is not random")
	}
	if a[0]&7 != 0 || a[31]&128 != 0 || a[31]&64 == 0 {
		t.Errorf("key not clamped: %x..%x", a[0], a[31])
	}
}

func TestPublicText(t *testing.T) {
	var p meshkey.Public
	if err := json.Unmarshal([]byte(`"`+wgPub+`"`), &p); err != nil || p.String() != wgPub {
		t.Fatalf("UnmarshalText: %v", err)
	}
	b, _ := json.Marshal(p)
	if string(b) != `"`+wgPub+`"` {
		t.Errorf("MarshalText = %s", b)
	}
}

// TestRoundTripWithWg checks that keys move freely between wg and meshkey.
func TestRoundTripWithWg(t *testing.T) {
	if _, err := exec.LookPath("wg"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("wg (wireguard-tools) is not installed; .ci/run must install it")
		}
		t.Skip("wg not installed (apt-get install wireguard-tools); under CI=true this fails")
	}
	k, _ := meshkey.NewPrivate()
	out, err := exec.Command("sh", "-c", "echo "+k.Base64()+" | wg pubkey").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != k.Public().String() {
		t.Errorf("wg pubkey = %s, meshkey = %s", got, k.Public())
	}
	gen, err := exec.Command("wg", "genkey").Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := meshkey.ParsePrivate(string(gen)); err != nil {
		t.Errorf("wg genkey output does not parse: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(wgPriv)
	f.Add(strings.Repeat("A", 44))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := meshkey.ParsePrivate(s)
		if err != nil {
			if len(s) > 4 && strings.Contains(err.Error(), s) {
				t.Fatalf("error echoes input: %v", err)
			}
			return
		}
		if k.Base64() != strings.TrimSpace(s) {
			t.Fatalf("round trip %q → %q", s, k.Base64())
		}
	})
}
