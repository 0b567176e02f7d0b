package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tailscale/hujson"
)

// maxErrors bounds how many problems one Parse reports.
const maxErrors = 100

// errTooMany stops a walk once maxErrors problems are known.
var errTooMany = errors.New("too many errors")

// decoder walks a parsed HuJSON tree, remembering where each value is so
// that every problem names its file, line, column and field.
type decoder struct {
	file  string
	lines lines
	errs  []error
	// In a Reparse the tree is of the file without its "nodes" value:
	// offsets from cut on are gap bytes short of the file's (see fileOff).
	cut, gap int
}

// fileOff returns the offset in the file of offset off in the tree.
func (d *decoder) fileOff(off int) int {
	if d.gap != 0 && off >= d.cut {
		return off + d.gap
	}
	return off
}

// errorf records a problem with the value that starts at off.
func (d *decoder) errorf(off int, field, format string, args ...any) {
	if len(d.errs) == maxErrors {
		d.errs = append(d.errs, fmt.Errorf("%s: %w; stopping", d.file, errTooMany))
	}
	if len(d.errs) > maxErrors {
		return
	}
	line, col := d.lines.at(d.fileOff(off))
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Column: col, Field: field, Err: fmt.Errorf(format, args...)})
}

// pos returns "file:line" for the value at off.
func (d *decoder) pos(off int) (string, int) {
	line, _ := d.lines.at(d.fileOff(off))
	return d.file + ":" + strconv.Itoa(line), line
}

func kindName(v *hujson.Value) string {
	switch v.Value.Kind() {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '0':
		return "a number"
	}
	return "a value"
}

// member is one key of an object, with where its name and value are.
type member struct {
	key    string
	keyOff int
	val    *hujson.Value
}

// object returns the members of v, reporting a non-object and duplicate
// keys. known, if not nil, lists the keys allowed; others are reported.
func (d *decoder) object(v *hujson.Value, field string, known ...string) ([]member, bool) {
	obj, ok := v.Value.(*hujson.Object)
	if !ok {
		d.errorf(v.StartOffset, field, "want an object, got %s", kindName(v))
		return nil, false
	}
	ms := make([]member, 0, len(obj.Members))
	// A small object (a node's, a rule's) looks for a duplicate among the
	// members so far; only a large one needs a map.
	var seen map[string]bool
	if len(obj.Members) > smallObject {
		seen = make(map[string]bool, len(obj.Members))
	}
	for i := range obj.Members {
		m := &obj.Members[i]
		key := unquote(m.Name.Value.(hujson.Literal))
		dup := false
		if seen != nil {
			dup = seen[key]
			seen[key] = true
		} else {
			dup = slices.ContainsFunc(ms, func(o member) bool { return o.key == key })
		}
		if dup {
			d.errorf(m.Name.StartOffset, join(field, key), "duplicate key %q", key)
			continue
		}
		if known != nil && !contains(known, key) {
			d.errorf(m.Name.StartOffset, field, "unknown key %q (want one of %s)", key, strings.Join(known, ", "))
			continue
		}
		ms = append(ms, member{key, m.Name.StartOffset, &m.Value})
	}
	return ms, true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// join appends an object key to a field path: "nodes" + "lap" = "nodes.lap".
func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

// index appends an array index to a field path: "ssh" + 1 = "ssh[1]".
func index(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

// array returns the elements of v, reporting a non-array.
func (d *decoder) array(v *hujson.Value, field string) ([]hujson.Value, bool) {
	arr, ok := v.Value.(*hujson.Array)
	if !ok {
		d.errorf(v.StartOffset, field, "want an array, got %s", kindName(v))
		return nil, false
	}
	return arr.Elements, true
}

// str returns the string v holds.
func (d *decoder) str(v *hujson.Value, field string) (string, bool) {
	lit, ok := v.Value.(hujson.Literal)
	if !ok || lit.Kind() != '"' {
		d.errorf(v.StartOffset, field, "want a string, got %s", kindName(v))
		return "", false
	}
	return unquote(lit), true
}

// smallObject is the most members an object may have for decoder.object
// to find duplicate keys without a map.
const smallObject = 8

// unquote returns the string a string literal holds: the bytes between
// the quotes when they are printable ASCII without escapes (nearly every
// name, key and email), else what hujson's own decoding makes of them.
func unquote(lit hujson.Literal) string {
	if len(lit) >= 2 && lit[0] == '"' && lit[len(lit)-1] == '"' {
		inner := lit[1 : len(lit)-1]
		plain := true
		for _, c := range inner {
			if c < 0x20 || c > 0x7e || c == '\\' || c == '"' {
				plain = false
				break
			}
		}
		if plain {
			return string(inner)
		}
	}
	return lit.String()
}

// boolean returns the boolean v holds.
func (d *decoder) boolean(v *hujson.Value, field string) (bool, bool) {
	lit, ok := v.Value.(hujson.Literal)
	if !ok || (lit.Kind() != 't' && lit.Kind() != 'f') {
		d.errorf(v.StartOffset, field, "want true or false, got %s", kindName(v))
		return false, false
	}
	return lit.Bool(), true
}

// strAt is a string from the document and where it is.
type strAt struct {
	s     string
	off   int
	field string
}

// strings returns the strings in the array v. Elements that are not
// strings are reported and left out.
func (d *decoder) strings(v *hujson.Value, field string) ([]strAt, bool) {
	els, ok := d.array(v, field)
	if !ok {
		return nil, false
	}
	out := make([]strAt, 0, len(els))
	for i := range els {
		f := index(field, i)
		if s, ok := d.str(&els[i], f); ok {
			out = append(out, strAt{s, els[i].StartOffset, f})
		}
	}
	return out, true
}
