package sshmesh

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/sshmesh/sshmesh/internal/atomicfile"
)

// LoadOrCreateHostKey returns the host key kept in the OpenSSH-format
// private key file at path. When there is no such file it generates an
// ed25519 key and writes it there first: mode 0600, atomically (a temp file
// in the same directory, fsync, rename), so a crash leaves the old file or
// the new one, never a torn one. Any existing OpenSSH private key loads,
// e.g. one made by ssh-keygen.
func LoadOrCreateHostKey(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("host key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("host key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "sshmesh host key")
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	if err := atomicfile.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	return ssh.NewSignerFromKey(priv)
}

// KnownHostsLine returns the known_hosts line that makes an ssh client
// trust key for the given mesh addresses on port (22 writes bare
// addresses, other ports [addr]:port, as OpenSSH does).
func KnownHostsLine(key ssh.PublicKey, port uint16, addrs ...netip.Addr) string {
	hosts := make([]string, len(addrs))
	for i, a := range addrs {
		hosts[i] = knownhosts.Normalize(net.JoinHostPort(a.String(), strconv.Itoa(int(port))))
	}
	return knownhosts.Line(hosts, key)
}
