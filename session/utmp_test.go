//go:build linux

package session

import (
	"net/netip"
	"testing"
	"time"
)

func TestUtmpLayout(t *testing.T) {
	now := time.Unix(1700000000, 123456000)
	r := newUtmp(utUserProcess, 4242, "/dev/pts/17", "alice", netip.MustParseAddr("::ffff:100.64.0.7"), now)
	b := r.bytes()
	if len(b) != utmpSize {
		t.Fatalf("record is %d bytes, want %d", len(b), utmpSize)
	}
	le := func(off int) uint32 {
		return uint32(b[off]) | uint32(b[off+1])<<8 | uint32(b[off+2])<<16 | uint32(b[off+3])<<24
	}
	cstr := func(off, n int) string {
		s := b[off : off+n]
		for i, c := range s {
			if c == 0 {
				return string(s[:i])
			}
		}
		return string(s)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"ut_type", b[0], byte(7)},
		{"ut_pid", le(4), uint32(4242)},
		{"ut_line", cstr(8, 32), "pts/17"},
		{"ut_id", cstr(40, 4), "s/17"},
		{"ut_user", cstr(44, 32), "alice"},
		{"ut_host", cstr(76, 256), "100.64.0.7"},
		{"ut_session", le(336), uint32(4242)},
		{"ut_tv.tv_sec", le(340), uint32(1700000000)},
		{"ut_tv.tv_usec", le(344), uint32(123456)},
		{"ut_addr_v6", [4]byte(b[348:352]), [4]byte{100, 64, 0, 7}},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	d := newUtmp(utDeadProcess, 4242, "/dev/pts/17", "alice", netip.MustParseAddr("100.64.0.7"), now).bytes()
	if d[0] != 8 || d[44] != 0 || d[76] != 0 || string(d[40:44]) != "s/17" {
		t.Errorf("logout record must be DEAD_PROCESS with the id and without user and host")
	}
}

func TestPutUtmpReusesSlot(t *testing.T) {
	path := t.TempDir() + "/utmp"
	now := time.Now()
	for _, r := range []utmpRecord{
		newUtmp(utUserProcess, 1, "/dev/pts/1", "a", netip.Addr{}, now),
		newUtmp(utUserProcess, 2, "/dev/pts/2", "b", netip.Addr{}, now),
		newUtmp(utDeadProcess, 1, "/dev/pts/1", "", netip.Addr{}, now),
		newUtmp(utUserProcess, 3, "/dev/pts/1", "c", netip.Addr{}, now),
	} {
		if err := putUtmp(path, r); err != nil {
			t.Fatal(err)
		}
	}
	b := readFile(t, path)
	if len(b) != 2*utmpSize || b[44] != 'c' || b[utmpSize+44] != 'b' {
		t.Errorf("utmp has %d bytes; users %q %q, want c then b", len(b), b[44], b[utmpSize+44])
	}
}
