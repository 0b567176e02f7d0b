package session

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/sshmesh/sshmesh/internal/envrule"
	"golang.org/x/crypto/ssh"
)

// Default PATHs, as Debian's sshd is built with, used when
// /etc/login.defs has no ENV_PATH / ENV_SUPATH.
const (
	defaultPath      = "/usr/local/bin:/usr/bin:/bin:/usr/games"
	defaultSuperPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// envConfig holds the files the environment is built from; tests point
// them elsewhere.
type envConfig struct {
	loginDefs string // /etc/login.defs
	locale    string // /etc/default/locale
	runUser   string // /run/user
}

// systemEnvConfig is the envConfig of the running system.
func systemEnvConfig() envConfig {
	return envConfig{
		loginDefs: "/etc/login.defs",
		locale:    "/etc/default/locale",
		runUser:   "/run/user",
	}
}

// environ is an ordered KEY=VALUE list where a later set replaces.
type environ struct {
	keys []string
	vals map[string]string
}

func (e *environ) set(k, v string) {
	if e.vals == nil {
		e.vals = map[string]string{}
	}
	if _, ok := e.vals[k]; !ok {
		e.keys = append(e.keys, k)
	}
	e.vals[k] = v
}

func (e *environ) list() []string {
	out := make([]string, 0, len(e.keys))
	for _, k := range e.keys {
		out = append(out, k+"="+e.vals[k])
	}
	return out
}

// envParams is what buildEnv needs beyond the Request.
type envParams struct {
	user  *User
	term  string // "" = no pty
	tty   string // "/dev/pts/N" or ""
	local netip.AddrPort
	peer  netip.AddrPort
	// utf8 reports that the client's terminal declared UTF-8 (the IUTF8
	// terminal mode set in its pty-req).
	utf8 bool
}

// buildEnv builds the child's environment by rule, as sshd's
// do_setup_env does, never from the server's own. pamEnv is PAM's
// (pam_getenvlist), nil without PAM.
func buildEnv(cfg envConfig, p envParams, pamEnv, clientEnv, extraEnv []string) []string {
	var e environ
	u := p.user
	for _, kv := range readLocale(cfg.locale) {
		e.set(kv[0], kv[1])
	}
	e.set("USER", u.Name)
	e.set("LOGNAME", u.Name)
	e.set("HOME", u.Home)
	e.set("PATH", loginPath(cfg.loginDefs, u.Uid == "0"))
	e.set("MAIL", "/var/mail/"+u.Name)
	e.set("SHELL", u.Shell)
	if dir := cfg.runUser + "/" + u.Uid; cfg.runUser != "" {
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			e.set("XDG_RUNTIME_DIR", dir)
		}
	}
	if p.term != "" {
		e.set("TERM", p.term)
	}
	// PAM's variables (pam_env, pam_systemd, ...), by their own rule: the
	// host's configuration, but it may read the user's files.
	pamEnv = slices.Clone(pamEnv)
	slices.Sort(pamEnv)
	for _, kv := range pamEnv {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || envrule.RefusedFromPAM(k, v) {
			continue
		}
		e.set(k, v)
	}
	// The client's variables, minus what the environment rule refuses
	// whatever a policy allows (the server asked policy.EnvAllowed already;
	// a caller of Start that did not is held to the same rule).
	for _, kv := range clientEnv {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || envrule.Refused(k, v) {
			continue
		}
		e.set(k, v)
	}
	if p.peer.IsValid() {
		pa, pp := p.peer.Addr().Unmap().WithZone("").String(), strconv.Itoa(int(p.peer.Port()))
		la, lp := "", "0"
		if p.local.IsValid() {
			la, lp = p.local.Addr().Unmap().WithZone("").String(), strconv.Itoa(int(p.local.Port()))
		}
		e.set("SSH_CLIENT", pa+" "+pp+" "+lp)
		e.set("SSH_CONNECTION", pa+" "+pp+" "+la+" "+lp)
	}
	if p.tty != "" {
		e.set("SSH_TTY", p.tty)
	}
	for _, kv := range extraEnv {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			e.set(k, v)
		}
	}
	// A terminal that declared UTF-8 and a login that names no character
	// set: in the C locale readline takes every byte of a multi-byte
	// character as a Meta key (Meta-< is beginning-of-history), so typed
	// text would turn into editing commands.
	if p.utf8 && e.vals["LC_ALL"] == "" && e.vals["LC_CTYPE"] == "" && e.vals["LANG"] == "" {
		e.set("LANG", "C.UTF-8")
	}
	return e.list()
}

// declaresUTF8 reports whether a pty-req's encoded modes set IUTF8.
func declaresUTF8(modes []byte) bool {
	m, err := ParseModes(modes)
	return err == nil && m[ssh.IUTF8] != 0
}

// loginPath reads ENV_PATH (ENV_SUPATH for root) from login.defs(5).
func loginPath(loginDefs string, root bool) string {
	key, def := "ENV_PATH", defaultPath
	if root {
		key, def = "ENV_SUPATH", defaultSuperPath
	}
	b, err := os.ReadFile(loginDefs)
	if err != nil {
		return def
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != key {
			continue
		}
		v := strings.Trim(f[1], `"`)
		v = strings.TrimPrefix(v, "PATH=")
		if v != "" {
			return v
		}
	}
	return def
}

// readLocale returns LANG, LANGUAGE and LC_* from an
// /etc/default/locale style file (KEY=VALUE lines, optionally quoted).
func readLocale(path string) [][2]string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out [][2]string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		k = strings.TrimSpace(k)
		if k != "LANG" && k != "LANGUAGE" && !strings.HasPrefix(k, "LC_") || !envrule.ValidName(k) {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out = append(out, [2]string{k, v})
	}
	return out
}
