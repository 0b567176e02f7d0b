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
type lines struct {
	starts []int // offsets at which lines 2, 3, ... start
	// skipped line starts are not in starts (see skip): all are before
	// offset from, and no offset asked for is between them.
	skipped, from int
}

func newLines(data []byte) lines {
	l := lines{starts: make([]int, 0, bytes.Count(data, []byte{'\n'}))}
	l.add(data, 0)
	return l
}

// add adds the line starts in b, the file's bytes from offset base on.
func (l *lines) add(b []byte, base int) {
	for off := 0; ; {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return
		}
		off += i + 1
		l.starts = append(l.starts, base+off)
	}
}

// skip adds the line starts in b, the file's bytes from offset base on,
// where no offset will be asked for (the "nodes" value a reload leaves
// out): it counts them, and keeps only the last, which offsets after b
// need.
func (l *lines) skip(b []byte, base int) {
	n := bytes.Count(b, []byte{'\n'})
	if n == 0 {
		return
	}
	last := bytes.LastIndexByte(b, '\n')
	l.starts = append(l.starts, base+last+1)
	l.skipped += n - 1
	l.from = base + last + 1
}

// at returns the 1-based line and column of offset off.
func (l lines) at(off int) (line, col int) {
	i := sort.SearchInts(l.starts, off+1) // number of line starts <= off
	start := 0
	if i > 0 {
		start = l.starts[i-1]
	}
	if off >= l.from {
		i += l.skipped
	}
	return i + 1, off - start + 1
}
