package policy

import (
	"bytes"
	"fmt"
	"sort"
)

// Error is one problem in a policy document, at a place in its file.
// [Parse] and [Load] return every problem they find, joined with
// [errors.Join]; use [errors.As] to get the first *Error.
type Error struct {
	File   string // file name given to Parse, e.g. "policy.hujson"
	Line   int    // 1-based line
	Column int    // 1-based byte column
	Field  string // e.g. "ssh[1].users[0]"; "" for syntax errors
	Err    error  // what is wrong
}

// Error returns "file:line:col: field: problem".
func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d:%d: %v", e.File, e.Line, e.Column, e.Err)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %v", e.File, e.Line, e.Column, e.Field, e.Err)
}

// Unwrap returns e.Err.
func (e *Error) Unwrap() error { return e.Err }

// lines maps byte offsets to line and column.
type lines []int // offsets at which lines 2, 3, ... start

func newLines(data []byte) lines {
	return make(lines, 0, bytes.Count(data, []byte{'\n'})).add(data, 0)
}

// add appends the line starts in b, the file's bytes from offset base on.
func (l lines) add(b []byte, base int) lines {
	for off := 0; ; {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return l
		}
		off += i + 1
		l = append(l, base+off)
	}
}

// at returns the 1-based line and column of offset off.
func (l lines) at(off int) (line, col int) {
	i := sort.SearchInts(l, off+1) // number of line starts <= off
	start := 0
	if i > 0 {
		start = l[i-1]
	}
	return i + 1, off - start + 1
}
