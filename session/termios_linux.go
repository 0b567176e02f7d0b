package session

import (
	"slices"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// ccIndex maps RFC 4254 special-character opcodes to c_cc indexes, as
// OpenSSH's ttymodes.h does for Linux (which lacks VDSUSP, VFLUSH,
// VSWTCH and VSTATUS; such opcodes are ignored, as sshd ignores them).
var ccIndex = map[uint8]int{
	ssh.VINTR: unix.VINTR, ssh.VQUIT: unix.VQUIT, ssh.VERASE: unix.VERASE,
	ssh.VKILL: unix.VKILL, ssh.VEOF: unix.VEOF, ssh.VEOL: unix.VEOL,
	ssh.VEOL2: unix.VEOL2, ssh.VSTART: unix.VSTART, ssh.VSTOP: unix.VSTOP,
	ssh.VSUSP: unix.VSUSP, ssh.VREPRINT: unix.VREPRINT,
	ssh.VWERASE: unix.VWERASE, ssh.VLNEXT: unix.VLNEXT,
	ssh.VDISCARD: unix.VDISCARD,
}

type flagField int

const (
	iflag flagField = iota
	lflag
	oflag
	cflag
)

// flagBit maps RFC 4254 flag opcodes to a termios field and bits. Like
// sshd, a non-zero argument ORs the bits in and zero clears them, also
// for the multi-bit CS7 and CS8.
var flagBit = map[uint8]struct {
	field flagField
	bits  uint32
}{
	ssh.IGNPAR: {iflag, unix.IGNPAR}, ssh.PARMRK: {iflag, unix.PARMRK},
	ssh.INPCK: {iflag, unix.INPCK}, ssh.ISTRIP: {iflag, unix.ISTRIP},
	ssh.INLCR: {iflag, unix.INLCR}, ssh.IGNCR: {iflag, unix.IGNCR},
	ssh.ICRNL: {iflag, unix.ICRNL}, ssh.IUCLC: {iflag, unix.IUCLC},
	ssh.IXON: {iflag, unix.IXON}, ssh.IXANY: {iflag, unix.IXANY},
	ssh.IXOFF: {iflag, unix.IXOFF}, ssh.IMAXBEL: {iflag, unix.IMAXBEL},
	ssh.IUTF8: {iflag, unix.IUTF8},

	ssh.ISIG: {lflag, unix.ISIG}, ssh.ICANON: {lflag, unix.ICANON},
	ssh.XCASE: {lflag, unix.XCASE}, ssh.ECHO: {lflag, unix.ECHO},
	ssh.ECHOE: {lflag, unix.ECHOE}, ssh.ECHOK: {lflag, unix.ECHOK},
	ssh.ECHONL: {lflag, unix.ECHONL}, ssh.NOFLSH: {lflag, unix.NOFLSH},
	ssh.TOSTOP: {lflag, unix.TOSTOP}, ssh.IEXTEN: {lflag, unix.IEXTEN},
	ssh.ECHOCTL: {lflag, unix.ECHOCTL}, ssh.ECHOKE: {lflag, unix.ECHOKE},
	ssh.PENDIN: {lflag, unix.PENDIN},

	ssh.OPOST: {oflag, unix.OPOST}, ssh.OLCUC: {oflag, unix.OLCUC},
	ssh.ONLCR: {oflag, unix.ONLCR}, ssh.OCRNL: {oflag, unix.OCRNL},
	ssh.ONOCR: {oflag, unix.ONOCR}, ssh.ONLRET: {oflag, unix.ONLRET},

	ssh.CS7: {cflag, unix.CS7}, ssh.CS8: {cflag, unix.CS8},
	ssh.PARENB: {cflag, unix.PARENB}, ssh.PARODD: {cflag, unix.PARODD},
}

// baudSpeed maps a baud rate to its termios speed constant; unknown
// rates give B9600, as OpenSSH's baud_to_speed.
func baudSpeed(baud uint32) uint32 {
	switch baud {
	case 0:
		return unix.B0
	case 50:
		return unix.B50
	case 75:
		return unix.B75
	case 110:
		return unix.B110
	case 134:
		return unix.B134
	case 150:
		return unix.B150
	case 200:
		return unix.B200
	case 300:
		return unix.B300
	case 600:
		return unix.B600
	case 1200:
		return unix.B1200
	case 1800:
		return unix.B1800
	case 2400:
		return unix.B2400
	case 4800:
		return unix.B4800
	case 19200:
		return unix.B19200
	case 38400:
		return unix.B38400
	case 57600:
		return unix.B57600
	case 115200:
		return unix.B115200
	case 230400:
		return unix.B230400
	case 460800:
		return unix.B460800
	case 500000:
		return unix.B500000
	case 576000:
		return unix.B576000
	case 921600:
		return unix.B921600
	case 1000000:
		return unix.B1000000
	case 1152000:
		return unix.B1152000
	case 1500000:
		return unix.B1500000
	case 2000000:
		return unix.B2000000
	case 2500000:
		return unix.B2500000
	case 3000000:
		return unix.B3000000
	case 3500000:
		return unix.B3500000
	case 4000000:
		return unix.B4000000
	}
	return unix.B9600
}

// applyModes changes t by the decoded modes in opcode order, as sshd's
// ssh_tty_parse_modes does; unsupported opcodes are ignored.
func applyModes(t *unix.Termios, modes map[uint8]uint32) {
	ops := make([]uint8, 0, len(modes))
	for op := range modes {
		ops = append(ops, op)
	}
	slices.Sort(ops)
	for _, op := range ops {
		v := modes[op]
		switch op {
		case ssh.TTY_OP_ISPEED, ssh.TTY_OP_OSPEED:
			// glibc's cfsetispeed and cfsetospeed both set the one
			// CBAUD field on Linux; an input speed of 0 means "same as
			// the output speed" and changes nothing.
			if op == ssh.TTY_OP_ISPEED && v == 0 {
				continue
			}
			t.Cflag = t.Cflag&^(unix.CBAUD|unix.CBAUDEX) | baudSpeed(v)
			continue
		}
		if i, ok := ccIndex[op]; ok {
			c := v
			if c == 255 {
				c = 0 // _POSIX_VDISABLE
			}
			t.Cc[i] = uint8(c)
			continue
		}
		f, ok := flagBit[op]
		if !ok {
			continue
		}
		p := []*uint32{&t.Iflag, &t.Lflag, &t.Oflag, &t.Cflag}[f.field]
		if v != 0 {
			*p |= f.bits
		} else {
			*p &^= f.bits
		}
	}
}
