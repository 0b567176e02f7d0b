package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

func newPublicKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestFetchHostKeys: a node's host key answer, fetched over an in-process
// mesh, is the keys it serves; an address no peer owns is refused before
// any dial.
func TestFetchHostKeys(t *testing.T) {
	m := sshmeshtest.NewMesh(t, 2)
	server, client := m.Nodes[0], m.Nodes[1]
	keys := []ssh.PublicKey{newPublicKey(t), newPublicKey(t)}
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := serveHostKeys(server.Node, DefaultHostKeysPort, keys, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := fetchHostKeys(ctx, client.Node, server.Addr, DefaultHostKeysPort)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(keys) {
		t.Fatalf("got %d keys, want %d", len(got), len(keys))
	}
	for i := range keys {
		if !bytes.Equal(got[i].Marshal(), keys[i].Marshal()) {
			t.Errorf("key %d: got %s, want %s", i, ssh.FingerprintSHA256(got[i]), ssh.FingerprintSHA256(keys[i]))
		}
	}
	if _, err := fetchHostKeys(ctx, client.Node, netip.MustParseAddr("100.64.9.9"), DefaultHostKeysPort); err == nil || !strings.Contains(err.Error(), "not a mesh address") {
		t.Errorf("unknown address: err %v", err)
	}
}

func TestParseHostKeys(t *testing.T) {
	line := string(ssh.MarshalAuthorizedKey(newPublicKey(t)))
	for _, tc := range []struct {
		name, in string
		keys     int
		err      string
	}{
		{"one", hostKeysHeader + line, 1, ""},
		{"two", hostKeysHeader + line + line, 2, ""},
		{"no header", line, 0, "not an sshmesh host key answer"},
		{"other service", "HTTP/1.1 400 Bad Request\r\n", 0, "not an sshmesh host key answer"},
		{"empty", hostKeysHeader, 0, "holds no key"},
		{"garbage", hostKeysHeader + "ssh-ed25519 AAAA!!\n", 0, "host key answer"},
		{"too long", hostKeysHeader + strings.Repeat("#\n", maxHostKeysAnswer), 0, "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := parseHostKeys([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || len(keys) != tc.keys {
				t.Fatalf("got %d keys, err %v; want %d", len(keys), err, tc.keys)
			}
		})
	}
}
