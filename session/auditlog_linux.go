package session

// The login record auditd keeps (type USER_LOGIN), sent to the kernel's
// audit subsystem over netlink as sshd does when built with Linux audit
// support, without libaudit: a NETLINK_AUDIT datagram carrying the
// record's text. Best-effort: a kernel without audit, audit disabled, or a
// server without CAP_AUDIT_WRITE means no record.

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// auditUserLoginType is AUDIT_USER_LOGIN (linux/audit.h).
const auditUserLoginType = 1112

// auditLogin is one USER_LOGIN record.
type auditLogin struct {
	user     string     // the local account
	addr     netip.Addr // the client's mesh address
	terminal string     // "/dev/pts/N", or "ssh" without a terminal
	success  bool
}

// text is the record as libaudit's audit_log_acct_message writes it for
// sshd: op=login acct="NAME" exe="..." hostname=? addr=... terminal=...
// res=success|failed.
func (a auditLogin) text() string {
	exe, err := os.Executable()
	if err != nil {
		exe = "?"
	}
	addr := "?"
	if a.addr.IsValid() {
		addr = a.addr.Unmap().WithZone("").String()
	}
	term := a.terminal
	if term == "" {
		term = "ssh"
	}
	res := "failed"
	if a.success {
		res = "success"
	}
	return fmt.Sprintf("op=login acct=%s exe=%s hostname=%s addr=%s terminal=%s res=%s",
		auditValue(a.user), auditValue(exe), addr, addr, auditValue(term), res)
}

// auditValue quotes v, or hex-encodes it when it holds a quote, a space, a
// control character or a byte above 0x7e, as libaudit does, so a name
// cannot forge fields of the record.
func auditValue(v string) string {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '"' || c <= ' ' || c > 0x7e {
			return strings.ToUpper(hex.EncodeToString([]byte(v)))
		}
	}
	return `"` + v + `"`
}

// auditSeq numbers the netlink messages of this process.
var auditSeq atomic.Uint32

// sendAuditLogin sends a to the kernel's audit subsystem and returns the
// kernel's answer: nil when it took the record (or audit is off, which
// drops it).
func sendAuditLogin(a auditLogin) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_AUDIT)
	if err != nil {
		return fmt.Errorf("audit socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	payload := append([]byte(a.text()), 0)
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(payload)+3)
	seq := auditSeq.Add(1)
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(payload)))
	binary.NativeEndian.PutUint16(msg[4:], auditUserLoginType)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	msg = append(msg, payload...)
	for len(msg)%4 != 0 {
		msg = append(msg, 0)
	}
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("audit send: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("audit ack: %w", err)
		}
		if n < unix.NLMSG_HDRLEN+4 || binary.NativeEndian.Uint32(buf[8:]) != seq {
			continue
		}
		if binary.NativeEndian.Uint16(buf[4:]) != unix.NLMSG_ERROR {
			continue
		}
		if errno := int32(binary.NativeEndian.Uint32(buf[unix.NLMSG_HDRLEN:])); errno != 0 {
			return fmt.Errorf("audit: %w", unix.Errno(-errno))
		}
		return nil
	}
}

// sendAudit sends a with send, logging a failure at debug level: where the
// kernel has no audit or the server may not write to it, there is none.
func sendAudit(send func(auditLogin) error, a auditLogin, log *slog.Logger) {
	if send == nil {
		return
	}
	if err := send(a); err != nil {
		log.Debug("session: no audit record", "err", err)
	}
}
