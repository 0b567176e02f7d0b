package session

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// maxNologin bounds the text of a nologin file shown to a client.
const maxNologin = 4 << 10

// accountConfig is what checkAccount reads; tests replace parts.
type accountConfig struct {
	shadow string           // /etc/shadow
	now    func() time.Time // the clock for expiry
	pam    pamRunner
	audit  func(auditLogin) error // sends auditd's USER_LOGIN record of a refusal
}

func systemAccountConfig() accountConfig {
	return accountConfig{shadow: "/etc/shadow", now: time.Now, pam: systemPAM(), audit: sendAuditLogin}
}

// CheckAccount applies rules to a login before it is accepted, as sshd
// does before it lets a client in: without PAM, a nologin file refuses
// every account but root's (uid 0) with the file's text, and an account
// whose shadow expiry date (shadow(5) field 8) is today or earlier is
// refused; with rules.PAMService, PAM's account management decides
// (pam_acct_mgmt). A refusal is a *ClientError wrapping ErrAccountRefused
// whose Msg is the text for the client. Other errors mean the host could
// not answer; the caller should refuse the login then too. When the login
// is allowed, notice is what PAM said all the same (pam_nologin's text to
// root, a password expiry warning), which sshd shows the client with its
// first interactive session; "" without PAM.
func CheckAccount(ctx context.Context, rules HostRules, a Account) (notice string, err error) {
	return checkAccount(ctx, rules, a, systemAccountConfig())
}

func checkAccount(ctx context.Context, rules HostRules, a Account, cfg accountConfig) (string, error) {
	if a.User == nil {
		return "", errors.New("session: CheckAccount: Account.User is nil")
	}
	notice, err := accountRules(ctx, rules, a, cfg)
	if errors.Is(err, ErrAccountRefused) && os.Geteuid() == 0 {
		// auditd's record of the failed login, as sshd's for a refusal.
		sendAudit(cfg.audit, auditLogin{user: a.User.Name, addr: a.Remote.Addr(), terminal: "ssh"},
			slog.New(slog.DiscardHandler))
	}
	return notice, err
}

func accountRules(ctx context.Context, rules HostRules, a Account, cfg accountConfig) (string, error) {
	if rules.PAMService != "" {
		return cfg.pam.account(ctx, rules, a)
	}
	if a.User.Uid != "0" {
		for _, path := range rules.nologinFiles() {
			if msg, ok := nologinText(path); ok {
				return "", &ClientError{Msg: msg, Err: fmt.Errorf("%w: %s exists", ErrAccountRefused, path)}
			}
		}
	}
	expire, err := shadowExpiry(cfg.shadow, a.User.Name)
	if err != nil {
		return "", fmt.Errorf("session: account expiry of %s: %w", a.User.Name, err)
	}
	if expire >= 0 && cfg.now().Unix()/86400 >= expire {
		return "", &ClientError{Msg: "Your account has expired; please contact your system administrator.",
			Err: fmt.Errorf("%w: account %s expired on day %d", ErrAccountRefused, a.User.Name, expire)}
	}
	return "", nil
}

// nologinText returns the text of the nologin file at path and whether it
// exists, as sshd's do_nologin and pam_nologin: the file's text, or a
// sentence when it is empty or unreadable.
func nologinText(path string) (string, bool) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", false
	}
	text := ""
	if err == nil {
		b, _ := io.ReadAll(io.LimitReader(f, maxNologin))
		f.Close()
		text = strings.TrimRight(string(b), "\r\n\t ")
	}
	if strings.TrimSpace(text) == "" {
		text = "Logins are currently disabled on this host (" + path + ")."
	}
	return text, true
}

// shadowExpiry returns the expiry day (days since 1970-01-01) of name's
// shadow entry, or -1 when it has none, the account has no shadow entry,
// or the server may not read the shadow file (it is not root, and then
// serves only itself).
func shadowExpiry(shadow, name string) (int64, error) {
	b, err := os.ReadFile(shadow)
	switch {
	case errors.Is(err, os.ErrPermission):
		return -1, nil
	case err == nil:
		if f := shadowEntry(b, name); f != nil {
			return expiryField(f)
		}
		if shadow != "/etc/shadow" {
			return -1, nil // a test's file: no NSS behind it
		}
	case !errors.Is(err, os.ErrNotExist):
		return -1, err
	}
	// Not in the file: an NSS source (sss, ldap) may know it.
	out, err := getent("shadow", name)
	if errors.Is(err, ErrUnknownUser) {
		return -1, nil
	}
	if err != nil {
		return -1, err
	}
	if f := shadowEntry(out, name); f != nil {
		return expiryField(f)
	}
	return -1, nil
}

// shadowEntry returns the fields of name's line in b, or nil.
func shadowEntry(b []byte, name string) []string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) >= 8 && f[0] == name {
			return f
		}
	}
	return nil
}

// expiryField parses field 8; empty means never. Like pam_unix and sshd,
// 0 counts as a date (1970-01-01): the account has expired.
func expiryField(f []string) (int64, error) {
	if f[7] == "" {
		return -1, nil
	}
	n, err := strconv.ParseInt(f[7], 10, 64)
	if err != nil || n < -1 {
		return -1, fmt.Errorf("shadow entry of %s: expiry %q is not a day number", f[0], f[7])
	}
	return n, nil
}
