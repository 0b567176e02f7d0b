package session

// Login records (utmp and wtmp) written in Go: no well-kept Go library
// does it, and glibc's pututline needs cgo. The layout is glibc's struct
// utmp on 64-bit Linux (384 bytes; 32-bit ut_tv for compatibility).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	utUserProcess = 7
	utDeadProcess = 8
	utmpSize      = 384
)

// utmpRecord is glibc's struct utmp for 64-bit Linux.
type utmpRecord struct {
	Type    int16
	_       int16
	Pid     int32
	Line    [32]byte
	ID      [4]byte
	User    [32]byte
	Host    [256]byte
	Exit    [2]int16
	Session int32
	TvSec   int32
	TvUsec  int32
	AddrV6  [16]byte
	_       [20]byte
}

// loginRecords names the utmp and wtmp files; empty skips one.
type loginRecords struct {
	utmp, wtmp string
}

func systemLoginRecords() loginRecords {
	return loginRecords{utmp: "/var/run/utmp", wtmp: "/var/log/wtmp"}
}

// newUtmp builds the record for a login (user != "") or a logout on
// tty ("/dev/pts/N"), as OpenSSH's construct_utmp: ut_line without
// "/dev/", ut_id its last 4 bytes, and user, host and address only on
// login.
func newUtmp(typ int16, pid int, tty, user string, host netip.Addr, now time.Time) utmpRecord {
	r := utmpRecord{Type: typ, Pid: int32(pid), TvSec: int32(now.Unix()), TvUsec: int32(now.Nanosecond() / 1000)}
	line := strings.TrimPrefix(tty, "/dev/")
	copy(r.Line[:], line)
	id := line
	if len(id) > len(r.ID) {
		id = id[len(id)-len(r.ID):]
	}
	copy(r.ID[:], id)
	if typ == utUserProcess {
		copy(r.User[:], user)
		if host.IsValid() {
			host = host.Unmap()
			copy(r.Host[:], host.WithZone("").String())
			if host.Is4() {
				a := host.As4()
				copy(r.AddrV6[:], a[:])
			} else {
				a := host.As16()
				copy(r.AddrV6[:], a[:])
			}
		}
		r.Session = int32(pid)
	}
	return r
}

func (r utmpRecord) bytes() []byte {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, &r)
	return b.Bytes()
}

// lockFile takes a write lock on f as glibc does, giving up after a
// second.
func lockFile(f *os.File) error {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	deadline := time.Now().Add(time.Second)
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) || time.Now().After(deadline) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// putUtmp writes r into the utmp file like pututline: over the entry
// with the same ut_id (of a user, login, init or dead process) or else at
// the end. A missing file is created (mode 0664) when its directory
// exists, as systemd-tmpfiles would have.
func putUtmp(path string, r utmpRecord) error {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o664)
	if err != nil {
		return err
	}
	defer f.Close()
	if os.IsNotExist(statErr) {
		if g, err := user.LookupGroup("utmp"); err == nil {
			if gid, err := strconv.Atoi(g.Gid); err == nil {
				_ = f.Chown(-1, gid)
			}
		}
	}
	if err := lockFile(f); err != nil {
		return err
	}
	buf := make([]byte, utmpSize)
	var off int64
	for ; ; off += utmpSize {
		n, err := f.ReadAt(buf, off)
		if n < utmpSize {
			if err != nil && err != io.EOF {
				return err
			}
			off = off - off%utmpSize
			break
		}
		typ := int16(binary.LittleEndian.Uint16(buf[0:]))
		if typ >= 5 && typ <= utDeadProcess && bytes.Equal(buf[40:44], r.ID[:]) {
			break
		}
	}
	_, err = f.WriteAt(r.bytes(), off)
	return err
}

// appendWtmp appends r to the wtmp file like updwtmp; a missing file is
// not created.
func appendWtmp(path string, r utmpRecord) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lockFile(f); err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if rem := st.Size() % utmpSize; rem != 0 {
		// A torn record: cut it off so ours stays aligned, as updwtmp.
		if err := f.Truncate(st.Size() - rem); err != nil {
			return err
		}
	}
	_, err = f.Write(r.bytes())
	return err
}

// record writes r to utmp and wtmp and returns what failed.
func (lr loginRecords) record(r utmpRecord) error {
	var errs []error
	if lr.utmp != "" {
		if err := putUtmp(lr.utmp, r); err != nil {
			errs = append(errs, fmt.Errorf("utmp: %w", err))
		}
	}
	if lr.wtmp != "" {
		if err := appendWtmp(lr.wtmp, r); err != nil {
			errs = append(errs, fmt.Errorf("wtmp: %w", err))
		}
	}
	return errors.Join(errs...)
}
