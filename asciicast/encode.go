package asciicast

import (
	"encoding/binary"
	"math/bits"
	"strconv"
	"unicode/utf8"
)

// AppendEvent appends one event line, [time, code, data] and a newline, to
// dst: the bytes json.Marshal writes for []any{json.Number(time with 6
// decimals), code, string(data)}, without its reflection and allocations.
// data that is not valid UTF-8 is written as json.Marshal writes it, each
// bad byte as the replacement character.
func AppendEvent(dst []byte, t float64, code string, data []byte) []byte {
	dst = append(dst, '[')
	dst = strconv.AppendFloat(dst, t, 'f', 6, 64)
	dst = append(dst, ',')
	dst = appendString(dst, []byte(code))
	dst = append(dst, ',')
	dst = appendString(dst, data)
	return append(dst, ']', '\n')
}

const hexDigits = "0123456789abcdef"

// plain[c] is true for the ASCII bytes json.Marshal writes as they are:
// not a control character, '"', '\\', or the HTML-sensitive '<', '>', '&'.
// Bytes from 0x80 are not plain: they start or continue UTF-8 sequences.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

const (
	lowBits  = 0x0101010101010101 // 0x01 in every byte of a word
	highBits = 0x8080808080808080 // 0x80 in every byte of a word
)

// specialBytes tests the 8 bytes of w (little-endian) at once for the
// ones that are not plain: from 0x80, below 0x20, '"' or '&' (0x22, 0x26:
// equal but for bit 2), '<' or '>' (0x3c, 0x3e: equal but for bit 1), or
// '\\'. It returns 0 when all are plain, else a mask whose lowest set bit
// is the top bit of the first byte that is not (bytes after that one may
// be marked wrongly: a borrow runs upwards only).
func specialBytes(w uint64) uint64 {
	m := w & highBits
	m |= (w - 0x20*lowBits) &^ w & highBits
	m |= zeroByte((w | 0x04*lowBits) ^ 0x26*lowBits)
	m |= zeroByte((w | 0x02*lowBits) ^ 0x3e*lowBits)
	m |= zeroByte(w ^ '\\'*lowBits)
	return m
}

// zeroByte marks the bytes of x that are 0 (exactly up to the first).
func zeroByte(x uint64) uint64 { return (x - lowBits) &^ x & highBits }

// appendString appends s as a JSON string, escaped as json.Marshal escapes
// it (HTML-safe, U+2028 and U+2029 escaped, invalid UTF-8 as U+FFFD).
func appendString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		for i+8 <= len(s) {
			m := specialBytes(binary.LittleEndian.Uint64(s[i:]))
			if m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		if i+8 > len(s) {
			for i < len(s) && plain[s[i]] {
				i++
			}
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
