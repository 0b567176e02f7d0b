// Checking the events a sender streams: whole asciicast lines, as encoding/json writes them.

package recorder

import (
	"bytes"
	"errors"
	"math"
	"strconv"
)

// checkEvents checks that p is whole lines, each an asciicast event as
// json.Marshal writes it, [time,"o"|"i"|"r",data], and returns the last
// time. It does not decode the data (validString only scans it): the
// recorder keeps the bytes as they came.
func checkEvents(p []byte) (float64, error) {
	if len(p) == 0 || p[len(p)-1] != '\n' {
		return 0, errors.New("bad stream: a data frame must be whole event lines")
	}
	var last float64
	for line := range bytes.Lines(p) {
		t, err := checkEvent(bytes.TrimSuffix(line, []byte("\n")))
		if err != nil {
			return 0, err
		}
		last = t
	}
	return last, nil
}

var errBadEvent = errors.New(`bad stream: an event is not [time,"o"|"i"|"r",data]`)

func checkEvent(line []byte) (float64, error) {
	if len(line) < 2 || line[0] != '[' || line[len(line)-1] != ']' {
		return 0, errBadEvent
	}
	body := line[1 : len(line)-1]
	comma := bytes.IndexByte(body, ',')
	if comma < 0 {
		return 0, errBadEvent
	}
	if !validNumber(body[:comma]) {
		return 0, errBadEvent
	}
	t, err := strconv.ParseFloat(string(body[:comma]), 64)
	if err != nil || t < 0 || math.IsInf(t, 0) || math.IsNaN(t) {
		return 0, errBadEvent
	}
	rest := body[comma+1:]
	if len(rest) < 6 || rest[0] != '"' || rest[2] != '"' || rest[3] != ',' || !bytes.ContainsRune([]byte("oir"), rune(rest[1])) {
		return 0, errBadEvent
	}
	data := rest[4:]
	if !validString(data) {
		return 0, errBadEvent
	}
	return t, nil
}

// validNumber reports whether p is a JSON number without a sign (the
// grammar json.Valid applies: 0 or a digit run not starting with 0, an
// optional fraction, an optional exponent). strconv.ParseFloat alone also
// takes "+1", ".5", "1.", "0x1p3" and "00012", which no player reads.
func validNumber(p []byte) bool {
	digits := func(i int) int { // the index after a run of digits from i
		for i < len(p) && '0' <= p[i] && p[i] <= '9' {
			i++
		}
		return i
	}
	i := 0
	switch {
	case len(p) == 0:
		return false
	case p[0] == '0':
		i = 1
	case '1' <= p[0] && p[0] <= '9':
		i = digits(1)
	default:
		return false
	}
	if i < len(p) && p[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		i++
		if i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return false
		}
		i = j
	}
	return i == len(p)
}

// stringByte[c] is true for the bytes that stand for themselves inside a
// JSON string: not '"', '\\' or a control character. (JSON, like
// json.Valid, does not ask the bytes to be valid UTF-8.)
var stringByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// validString reports whether p is exactly one JSON string, as json.Valid
// would (without the white space json.Valid allows around it).
func validString(p []byte) bool {
	if len(p) < 2 || p[0] != '"' {
		return false
	}
	for i := 1; i < len(p); {
		for i < len(p) && stringByte[p[i]] {
			i++
		}
		if i == len(p) {
			return false
		}
		switch p[i] {
		case '"':
			return i == len(p)-1
		case '\\':
			if i+1 >= len(p) {
				return false
			}
			switch p[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(p) || !isHex(p[i+2]) || !isHex(p[i+3]) || !isHex(p[i+4]) || !isHex(p[i+5]) {
					return false
				}
				i += 6
			default:
				return false
			}
		default: // a control character
			return false
		}
	}
	return false
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
