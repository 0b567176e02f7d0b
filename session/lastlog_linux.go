package session

// lastlog(5) written in Go, as sshd's record_login does for sessions with
// a terminal, and read back for its PrintLastLog message. The layout is
// glibc's struct lastlog on Linux: a 32-bit time, the line and the host,
// 292 bytes at offset uid×292 of a sparse file.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"
)

const lastlogSize = 292

type lastlogRecord struct {
	Time int32
	Line [32]byte
	Host [256]byte
}

// lastLogin is a previous login of an account, from lastlog.
type lastLogin struct {
	when       time.Time
	line, host string
}

// readLastlog returns uid's previous login, ok false when there is none
// (or the file is missing or unreadable).
func readLastlog(path string, uid uint32) (lastLogin, bool) {
	if path == "" {
		return lastLogin{}, false
	}
	f, err := os.Open(path)
	if err != nil {
		return lastLogin{}, false
	}
	defer f.Close()
	buf := make([]byte, lastlogSize)
	if n, _ := f.ReadAt(buf, int64(uid)*lastlogSize); n < lastlogSize {
		return lastLogin{}, false
	}
	var r lastlogRecord
	if err := binary.Read(bytes.NewReader(buf), binary.LittleEndian, &r); err != nil || r.Time == 0 {
		return lastLogin{}, false
	}
	return lastLogin{when: time.Unix(int64(uint32(r.Time)), 0),
		line: cstring(r.Line[:]), host: cstring(r.Host[:])}, true
}

// writeLastlog records a login of uid on tty from host. A missing file is
// not created: the host keeps no lastlog (or keeps lastlog2's database).
func writeLastlog(path string, uid uint32, tty string, host netip.Addr, now time.Time) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	r := lastlogRecord{Time: int32(now.Unix())}
	copy(r.Line[:], strings.TrimPrefix(tty, "/dev/"))
	if host.IsValid() {
		copy(r.Host[:], host.Unmap().WithZone("").String())
	}
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, &r)
	if _, err := f.WriteAt(b.Bytes(), int64(uid)*lastlogSize); err != nil {
		return fmt.Errorf("lastlog: %w", err)
	}
	return nil
}

// printLastLogin writes sshd's PrintLastLog line for l to w.
func printLastLogin(w io.Writer, l lastLogin) {
	from := ""
	if l.host != "" {
		from = " from " + l.host
	}
	fmt.Fprintf(w, "Last login: %s%s\n", l.when.Format("Mon Jan _2 15:04:05 2006"), from)
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
