//go:build linux

package session

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// TestAuditValue: a value that could forge fields of the record (a quote,
// a space, a control or non-ASCII byte) is hex-encoded, as libaudit does.
func TestAuditValue(t *testing.T) {
	for in, want := range map[string]string{
		"alice":          `"alice"`,
		"/dev/pts/3":     `"/dev/pts/3"`,
		`x" res=success`: "7822207265733D73756363657373",
		"tab\there":      "7461620968657265",
		"caf\u00e9":      "636166C3A9",
	} {
		if got := auditValue(in); got != want {
			t.Errorf("auditValue(%q) = %s, want %s", in, got, want)
		}
	}
}

// auditDaemon makes the test the host's audit daemon, with audit enabled,
// until it ends; it skips when a real auditd runs (its place is not the
// test's to take).
type auditDaemon struct{ fd int }

const (
	auditGet = 1000
	auditSet = 1001
)

func newAuditDaemon(t *testing.T) *auditDaemon {
	t.Helper()
	testkit.NeedRoot(t)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_AUDIT)
	if err != nil {
		testkit.SkipOrFail(t, "this kernel has no audit netlink: "+err.Error())
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	d := &auditDaemon{fd: fd}
	st := d.request(t, auditGet, nil)
	if len(st) < 16 {
		t.Fatalf("AUDIT_GET: %d bytes", len(st))
	}
	enabled, pid := binary.NativeEndian.Uint32(st[4:]), binary.NativeEndian.Uint32(st[12:])
	if pid != 0 {
		t.Skipf("an audit daemon (pid %d) runs on this host; the test does not take its place", pid)
	}
	set := func(enabled, pid uint32) {
		s := make([]byte, 40)
		binary.NativeEndian.PutUint32(s[0:], 1|4) // AUDIT_STATUS_ENABLED|AUDIT_STATUS_PID
		binary.NativeEndian.PutUint32(s[4:], enabled)
		binary.NativeEndian.PutUint32(s[12:], pid)
		d.request(t, auditSet, s)
	}
	set(1, uint32(os.Getpid()))
	t.Cleanup(func() { set(enabled, 0) })
	return d
}

// request sends a message of type typ and returns the payload of the
// kernel's answer of the same type, if any, after its ack.
func (d *auditDaemon) request(t *testing.T, typ uint16, payload []byte) []byte {
	t.Helper()
	msg := make([]byte, unix.NLMSG_HDRLEN)
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(payload)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 4242)
	if err := unix.Sendto(d.fd, append(msg, payload...), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		testkit.SkipOrFail(t, "audit netlink refused the request: "+err.Error())
	}
	var answer []byte
	buf := make([]byte, 8192)
	for i := 0; i < 2; i++ {
		n, _, err := unix.Recvfrom(d.fd, buf, 0)
		if err != nil {
			break
		}
		mtyp := binary.NativeEndian.Uint16(buf[4:])
		switch {
		case mtyp == unix.NLMSG_ERROR:
			if e := int32(binary.NativeEndian.Uint32(buf[unix.NLMSG_HDRLEN:])); e != 0 {
				testkit.SkipOrFail(t, "audit netlink refused the request: "+unix.Errno(-e).Error())
			}
		case mtyp == typ:
			answer = append([]byte(nil), buf[unix.NLMSG_HDRLEN:n]...)
		}
		if typ != auditGet {
			break
		}
	}
	return answer
}

// waitRecord waits up to 10 s for a record of type typ whose text holds
// every one of parts.
func (d *auditDaemon) waitRecord(t *testing.T, typ uint16, parts ...string) string {
	t.Helper()
	buf := make([]byte, 16384)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(d.fd, buf, 0)
		if err != nil || n < unix.NLMSG_HDRLEN || binary.NativeEndian.Uint16(buf[4:]) != typ {
			continue
		}
		text := string(buf[unix.NLMSG_HDRLEN:n])
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(text, p)
		}
		if ok {
			return text
		}
	}
	t.Fatalf("no audit record of type %d with %q", typ, parts)
	return ""
}

// TestAuditUserLogin: a session sends auditd's USER_LOGIN record, and a
// login the host refuses a failed one.
func TestAuditUserLogin(t *testing.T) {
	u := testUser(t)
	d := newAuditDaemon(t)
	r := run(t, testConfig(t), Request{User: u.Name, Command: "true", Remote: mustAddrPort("100.64.0.7:4000")})
	if r.exit.Code != 0 {
		t.Fatalf("session: %+v %q", r.exit, r.stderr)
	}
	rec := d.waitRecord(t, auditUserLoginType, `acct="`+u.Name+`"`, "addr=100.64.0.7", `terminal="ssh"`, "res=success")
	t.Logf("record: %s", rec)

	nologin := t.TempDir() + "/nologin"
	writeFile(t, nologin, "closed")
	_, err := CheckAccount(t.Context(), HostRules{Nologin: []string{nologin}}, Account{User: u, Remote: mustAddrPort("100.64.0.8:1")})
	if err == nil {
		t.Fatal("nologin did not refuse")
	}
	d.waitRecord(t, auditUserLoginType, `acct="`+u.Name+`"`, "addr=100.64.0.8", "res=failed")
}
