package checkpage

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/sshmesh/sshmesh/internal/atomicfile"
	"github.com/sshmesh/sshmesh/meshkey"
)

// Passkeys: a check whose rule asks for "checkProof": "passkey" (the
// default) is approved only with a WebAuthn assertion from a passkey
// enrolled for the caller's owner, verified with go-webauthn.
//
// WebAuthn needs a secure context, and the one the person reaches without a
// mesh of their own is the local link of `sshmesh nc`: http://HOST:PORT on
// loopback, where HOST is LinkHost of the server's key, a name under
// .localhost (browsers resolve every *.localhost name to loopback and treat
// it as secure; the mesh address is not secure). The relying party ID is
// that HOST, so a passkey is bound to one server: a page of another server
// (whose link nc names after that server's key) or of any other localhost
// program (http://localhost:3000) cannot ask for it, since a page may ask
// only for its own host or a parent. The port changes with every check, so
// it is not pinned: any port of HOST is accepted. What that leaves open: a
// program of this machine that serves a page on HOST itself (the loopback
// name is not owned by anyone), if it can also reach the server's page (it
// needs a node of the caller's owner: its key, or the person's own link).
//
// Enrolment takes an invitation: a single-use code that the server's admin
// makes with `sshmesh passkey invite --owner O` (see NewInvite) and gives
// the person. On an approval page of a login of O's, the person enters the
// code and creates a passkey; the code is used up then. Holding a node's
// key alone, one can neither enrol a passkey nor approve with one.

// LinkHost is the host name of a local link to the approval page of the
// server with key server, and the relying party ID of its passkeys:
// "s" and 32 hex digits (128 bits) of a digest of the key, under
// .localhost: finding another key with the same name is out of reach.
func LinkHost(server meshkey.Public) string {
	h := sha256.Sum256(append([]byte("sshmesh link host\x00"), server[:]...))
	return "s" + hex.EncodeToString(h[:16]) + ".localhost"
}

// passkeyVersion is the format of the passkey file.
const passkeyVersion = 1

// passkeyFile is the JSON of Checker.PasskeyFile.
type passkeyFile struct {
	Version  int          `json:"version"`
	Passkeys []passkeyRec `json:"passkeys"`
}

// passkeyRec is one enrolled passkey.
type passkeyRec struct {
	Owner      string              `json:"owner"`
	Added      time.Time           `json:"added"`
	Credential webauthn.Credential `json:"credential"`
}

// passkeyStore reads and writes the passkey file. It reads the file on
// every use, so credentials added or removed by hand take effect at once.
type passkeyStore struct {
	path string
	mu   sync.Mutex
}

func (s *passkeyStore) read() (passkeyFile, error) {
	f := passkeyFile{Version: passkeyVersion}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%s: %w", s.path, err)
	}
	if f.Version != passkeyVersion {
		return f, fmt.Errorf("%s: version %d, want %d", s.path, f.Version, passkeyVersion)
	}
	return f, nil
}

func (s *passkeyStore) write(f passkeyFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(s.path, append(b, '\n'), 0o600)
}

// credentials returns owner's passkeys.
func (s *passkeyStore) credentials(owner string) ([]webauthn.Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.read()
	if err != nil {
		return nil, err
	}
	var cs []webauthn.Credential
	for _, p := range f.Passkeys {
		if p.Owner == owner {
			cs = append(cs, p.Credential)
		}
	}
	return cs, nil
}

// add enrols c for owner.
func (s *passkeyStore) add(owner string, c webauthn.Credential, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.read()
	if err != nil {
		return err
	}
	f.Passkeys = append(f.Passkeys, passkeyRec{Owner: owner, Added: now.UTC(), Credential: c})
	return s.write(f)
}

// used records the authenticator state of a credential after a login (its
// signature counter, and a clone warning).
func (s *passkeyStore) used(owner string, c webauthn.Credential) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := s.read()
	if err != nil {
		return err
	}
	for i := range f.Passkeys {
		p := &f.Passkeys[i]
		if p.Owner == owner && string(p.Credential.ID) == string(c.ID) {
			p.Credential.Authenticator = c.Authenticator
		}
	}
	return s.write(f)
}

// passkeyUser is an owner as go-webauthn sees it.
type passkeyUser struct {
	owner string
	creds []webauthn.Credential
}

// WebAuthnID is a digest of the owner: stable, and not the owner itself.
func (u passkeyUser) WebAuthnID() []byte {
	h := sha256.Sum256([]byte("sshmesh owner\x00" + u.owner))
	return h[:]
}
func (u passkeyUser) WebAuthnName() string                       { return u.owner }
func (u passkeyUser) WebAuthnDisplayName() string                { return u.owner }
func (u passkeyUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

// linkOrigin reports whether origin is http://HOST:PORT, the origin of a
// local link to this server's page (HOST is its LinkHost).
func linkOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Scheme != "http" || u.Hostname() != host || u.Path != "" || u.User != nil {
		return false
	}
	p, err := strconv.ParseUint(u.Port(), 10, 16)
	return err == nil && p != 0
}

// relyingParty is go-webauthn for one ceremony of the server whose link
// host is host, from origin.
func relyingParty(host, origin string) (*webauthn.WebAuthn, error) {
	return webauthn.New(&webauthn.Config{
		RPID:          host,
		RPDisplayName: "sshmesh " + host,
		RPOrigins:     []string{origin},
	})
}

// invite is one enrolment invitation, in a file of InviteDir named by the
// code's digest (so the directory does not hold the codes themselves).
type invite struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
}

// NewInvite makes a single-use code that lets owner enrol one passkey on
// an approval page of the Checker whose InviteDir is dir, until validFor
// has passed. Give the code to that person only: whoever holds it (and can
// reach an approval page of one of owner's logins) can enrol.
func NewInvite(dir, owner string, validFor time.Duration) (string, error) {
	if owner == "" || strings.ContainsAny(owner, "\x00\n") {
		return "", fmt.Errorf("checkpage: invite: bad owner %q", owner)
	}
	var b [15]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	code := base64.RawURLEncoding.EncodeToString(b[:])
	j, err := json.Marshal(invite{Owner: owner, Expires: time.Now().Add(validFor).UTC()})
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(invitePath(dir, code), append(j, '\n'), 0o600); err != nil {
		return "", err
	}
	return code, nil
}

func invitePath(dir, code string) string {
	h := sha256.Sum256([]byte(code))
	return filepath.Join(dir, hex.EncodeToString(h[:])+".json")
}

// checkInvite reports whether code is a live invitation for owner.
func checkInvite(dir, code, owner string, now time.Time) error {
	if dir == "" {
		return errors.New("this server takes no enrolment codes")
	}
	code = strings.TrimSpace(code)
	if len(code) != 20 {
		return errors.New("that is not an enrolment code")
	}
	b, err := os.ReadFile(invitePath(dir, code))
	if err != nil {
		return errors.New("no such enrolment code (or it was used already)")
	}
	var in invite
	if err := json.Unmarshal(b, &in); err != nil {
		return fmt.Errorf("enrolment code unreadable: %w", err)
	}
	if in.Owner != owner {
		return fmt.Errorf("the enrolment code is not for %s", owner)
	}
	if !now.Before(in.Expires) {
		return errors.New("the enrolment code has expired")
	}
	return nil
}

// useInvite uses code up; only the first of two racing uses succeeds.
func useInvite(dir, code string) error {
	return os.Remove(invitePath(dir, strings.TrimSpace(code)))
}
