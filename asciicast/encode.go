package asciicast

import (
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

// appendString appends s as a JSON string, escaped as json.Marshal escapes
// it (HTML-safe, U+2028 and U+2029 escaped, invalid UTF-8 as U+FFFD).
func appendString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		for i < len(s) && plain[s[i]] {
			i++
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
