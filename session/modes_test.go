//go:build linux

package session

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

func TestParseModes(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    map[uint8]uint32
		wantErr bool
	}{
		{"empty", nil, map[uint8]uint32{}, false},
		{"only end", []byte{0}, map[uint8]uint32{}, false},
		{"one", []byte{53, 0, 0, 0, 1, 0}, map[uint8]uint32{53: 1}, false},
		{"no end", []byte{53, 0, 0, 0, 1}, map[uint8]uint32{53: 1}, false},
		{"speeds", []byte{128, 0, 0, 0x96, 0, 129, 0, 0, 0x96, 0, 0}, map[uint8]uint32{128: 38400, 129: 38400}, false},
		{"later wins", []byte{1, 0, 0, 0, 3, 1, 0, 0, 0, 4, 0}, map[uint8]uint32{1: 4}, false},
		{"unknown opcode below 160 kept", []byte{159, 0, 0, 0, 9, 0}, map[uint8]uint32{159: 9}, false},
		{"truncated argument", []byte{53, 0, 0}, nil, true},
		{"opcode without argument", []byte{53}, nil, true},
		{"undefined opcode", []byte{160, 0, 0, 0, 1, 0}, nil, true},
		{"bytes after end", []byte{0, 53, 0, 0, 0, 1}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseModes(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); !tt.wantErr && diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseModes(f *testing.F) {
	f.Add([]byte{53, 0, 0, 0, 1, 0})
	f.Add(encodeModes(ssh.TerminalModes{ssh.VINTR: 3, ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 14400}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseModes(b)
		if err != nil {
			return
		}
		// What parses re-encodes to something that parses the same.
		again, err := ParseModes(encodeModes(m))
		if err != nil {
			t.Fatalf("re-encoded modes fail: %v", err)
		}
		if diff := cmp.Diff(m, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
		var tio unix.Termios
		applyModes(&tio, m)
	})
}

func TestApplyModes(t *testing.T) {
	tio := unix.Termios{Lflag: unix.ECHO | unix.ICANON, Cflag: unix.B38400 | unix.CS8}
	applyModes(&tio, map[uint8]uint32{
		ssh.ECHO: 0, ssh.ISIG: 1, ssh.VINTR: 3, ssh.VQUIT: 255, ssh.IUTF8: 1,
		ssh.TTY_OP_OSPEED: 9600, ssh.TTY_OP_ISPEED: 0, 200 - 100: 1, // unknown: ignored
	})
	if tio.Lflag != unix.ICANON|unix.ISIG || tio.Iflag != unix.IUTF8 {
		t.Errorf("flags: lflag %#o iflag %#o", tio.Lflag, tio.Iflag)
	}
	if tio.Cc[unix.VINTR] != 3 || tio.Cc[unix.VQUIT] != 0 {
		t.Errorf("cc: intr %d quit %d (255 is _POSIX_VDISABLE, 0)", tio.Cc[unix.VINTR], tio.Cc[unix.VQUIT])
	}
	if tio.Cflag&(unix.CBAUD|unix.CBAUDEX) != unix.B9600 || tio.Cflag&unix.CSIZE != unix.CS8 {
		t.Errorf("cflag %#o, want B9600 CS8", tio.Cflag)
	}
}
