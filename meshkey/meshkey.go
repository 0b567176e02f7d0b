// Package meshkey holds WireGuard keys: 32-byte Curve25519 keys in the
// base64 text that `wg genkey` and `wg pubkey` print and read, so keys move
// freely between wg and sshmesh.
//
// A [Public] key is a mesh identity and prints as its base64 text. A
// [Private] key never prints: its String, fmt verbs and slog value are
// redacted, and [Private.Base64] is the one deliberate way to get its text
// (for `sshmesh keygen` and config files).
package meshkey

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// Size is the length of a key in bytes.
const Size = 32

// Public is a WireGuard public key: the identity of a mesh node.
// The zero value is not a valid key; see [Public.IsZero].
type Public [Size]byte

// Private is a WireGuard private key. Its text forms are redacted.
type Private [Size]byte

// ParsePublic parses a public key in wg's base64 text.
func ParsePublic(s string) (Public, error) {
	b, err := decode(s, "public")
	if err != nil {
		return Public{}, err
	}
	return Public(b), nil
}

// ParsePrivate parses a private key in wg's base64 text. Its errors never
// contain the text they were given.
func ParsePrivate(s string) (Private, error) {
	b, err := decode(s, "private")
	if err != nil {
		return Private{}, err
	}
	return Private(b), nil
}

func decode(s, kind string) ([Size]byte, error) {
	var k [Size]byte
	s = strings.TrimSpace(s)
	if s == "" {
		return k, fmt.Errorf("meshkey: empty %s key", kind)
	}
	// 32 bytes are exactly 44 base64 characters with one '=' of padding.
	if len(s) != base64.StdEncoding.EncodedLen(Size) {
		tool := "wg genkey"
		if kind == "public" {
			tool = "wg pubkey"
		}
		return k, fmt.Errorf("meshkey: %s key is %d characters of text, want 44 (base64 of 32 bytes, as `%s` prints)", kind, len(s), tool)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return [Size]byte{}, fmt.Errorf("meshkey: %s key is not valid base64 (bad character at offset %d)", kind, int64(ce))
		}
		return [Size]byte{}, fmt.Errorf("meshkey: %s key is not valid base64", kind)
	}
	if len(b) != Size {
		return k, fmt.Errorf("meshkey: %s key decodes to %d bytes, want %d", kind, len(b), Size)
	}
	copy(k[:], b)
	clear(b)
	return k, nil
}

// NewPrivate returns a new random private key, clamped as `wg genkey` does.
func NewPrivate() (Private, error) {
	var k Private
	if _, err := rand.Read(k[:]); err != nil {
		return Private{}, fmt.Errorf("meshkey: %w", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// Public returns the public key of k, as `wg pubkey` does.
func (k Private) Public() Public {
	var p Public
	curve25519.ScalarBaseMult((*[32]byte)(&p), (*[32]byte)(&k))
	return p
}

// IsZero reports whether k is the all-zero (unset) key.
func (k Private) IsZero() bool { return k == Private{} }

// Base64 returns the secret text of k, as `wg genkey` prints it. It is the
// only method that reveals the key; use it only to write a key out on purpose.
func (k Private) Base64() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex returns the key in the hex form of WireGuard's UAPI. Like Base64, it
// reveals the key.
func (k Private) Hex() string { return hex.EncodeToString(k[:]) }

const redacted = "meshkey.Private(redacted)"

// String returns a redacted placeholder, never the key.
func (k Private) String() string { return redacted }

// GoString returns a redacted placeholder, never the key.
func (k Private) GoString() string { return redacted }

// Format prints a redacted placeholder for every fmt verb.
func (k Private) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue makes slog print a redacted placeholder.
func (k Private) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText refuses, so a private key cannot leak through encoding/json or
// similar by accident.
func (k Private) MarshalText() ([]byte, error) {
	return nil, errors.New("meshkey: refusing to marshal a private key; use Base64 deliberately")
}

// String returns the base64 text of k, as `wg pubkey` prints it.
func (k Public) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex returns the key in the hex form of WireGuard's UAPI.
func (k Public) Hex() string { return hex.EncodeToString(k[:]) }

// Short returns the first 8 characters of the base64 text, for logs and
// messages where the whole key would be noise.
func (k Public) Short() string { return k.String()[:8] }

// IsZero reports whether k is the all-zero (unset) key.
func (k Public) IsZero() bool { return k == Public{} }

// MarshalText implements encoding.TextMarshaler (base64 text).
func (k Public) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (base64 text).
func (k *Public) UnmarshalText(b []byte) error {
	p, err := ParsePublic(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}
