package session

import (
	"encoding/binary"
	"fmt"
)

// ttyOpEnd ends an encoded terminal-modes string (RFC 4254 §8).
const ttyOpEnd = 0

// ParseModes decodes RFC 4254 §8 encoded terminal modes (a pty-req's
// "encoded terminal modes" string) into opcode → argument, the shape of
// golang.org/x/crypto/ssh.TerminalModes. Decoding stops at TTY_OP_END (0)
// or at the end of b. It fails, and never panics, on a truncated argument,
// on an opcode from 160 to 255 (their argument format is undefined) and
// on bytes after TTY_OP_END; sshd ignores all the modes in those cases and
// so does Start. A later occurrence of an opcode replaces an earlier one.
func ParseModes(b []byte) (map[uint8]uint32, error) {
	m := make(map[uint8]uint32)
	for i := 0; i < len(b); {
		op := b[i]
		i++
		if op == ttyOpEnd {
			if i != len(b) {
				return nil, fmt.Errorf("session: terminal modes: %d bytes after TTY_OP_END", len(b)-i)
			}
			return m, nil
		}
		if op >= 160 {
			return nil, fmt.Errorf("session: terminal modes: undefined opcode %d at offset %d", op, i-1)
		}
		if len(b)-i < 4 {
			return nil, fmt.Errorf("session: terminal modes: opcode %d at offset %d: truncated argument", op, i-1)
		}
		m[op] = binary.BigEndian.Uint32(b[i:])
		i += 4
	}
	return m, nil
}
