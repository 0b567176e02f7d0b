package policy

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"

	"github.com/sshmesh/sshmesh/meshkey"
)

// quickNodes compiles a "nodes" value (b, from its '{' to its '}') as
// compiler.nodes does, without building its HuJSON tree first, when it is
// written plainly: strings of printable ASCII without escapes, every entry
// valid (white space, comments and trailing commas as HuJSON has them). With 100,000 nodes
// the tree was most of Parse's time and of its peak memory. For anything
// else (escapes, a byte that is not ASCII even in a comment, any entry
// compiler.nodes would report) it
// returns nil, and Parse compiles the whole file from its tree, which
// reports what is wrong; so only the valid, plain "nodes" take this way,
// and they get the nodes compiler.nodes would make of them. Whether the
// tags the nodes have are declared is left to compiler.adoptNodes.
func quickNodes(b []byte) *nodeSet {
	if !allASCII(b) {
		// Strings here are ASCII, so the byte is in a comment, which
		// hujson requires to be valid UTF-8 without U+2028 or U+2029 in a
		// line comment: left to the tree to judge.
		return nil
	}
	q := quickReader{skimmer{b: b}}
	if !q.eat('{') {
		return nil
	}
	// Sized once (by a count that may be a little more): growing 100,000
	// nodes and keys step by step cost more than filling them.
	size := bytes.Count(b, []byte(`"key"`))
	nb := newNodeBuilder(size)
	// By the owner as written: its lower-case form, interned, checked
	// once per owner rather than once per node.
	ownerOf := map[string]string{}
	tagOf := map[string]string{} // interned
	var tags []string            // the node's, reused
	for {
		if q.space(); q.eat('}') {
			break
		}
		name, ok := q.str()
		if !ok || !validName(string(name)) { // a name twice: see nodeBuilder.finish
			return nil
		}
		if q.space(); !q.eat(':') {
			return nil
		}
		if q.space(); !q.eat('{') {
			return nil
		}
		var key meshkey.Public
		var owner string
		var haveKey, haveTags bool
		tags = tags[:0]
		for {
			if q.space(); q.eat('}') {
				break
			}
			field, ok := q.str()
			if !ok {
				return nil
			}
			if q.space(); !q.eat(':') {
				return nil
			}
			q.space()
			switch string(field) {
			case "key":
				s, ok := q.str()
				if !ok || haveKey {
					return nil
				}
				k, err := meshkey.ParsePublic(string(s))
				if _, dup := nb.findKey(k); err != nil || k.IsZero() || dup {
					return nil
				}
				key, haveKey = k, true
			case "owner":
				s, ok := q.str()
				if !ok || owner != "" {
					return nil
				}
				o, ok := ownerOf[string(s)]
				if !ok {
					if !validEmail(string(s)) {
						return nil
					}
					o = lower(string(s))
					if p, ok := ownerOf[o]; ok {
						o = p // the same owner, spelled otherwise before
					}
					ownerOf[string(s)] = o
				}
				owner = o
			case "tags":
				if haveTags || !q.eat('[') {
					return nil
				}
				haveTags = true // "tags": [] was there: a second one is a duplicate
				for {
					if q.space(); q.eat(']') {
						break
					}
					s, ok := q.str()
					if !ok || !strings.HasPrefix(string(s), "tag:") {
						return nil
					}
					t, ok := tagOf[string(s)]
					if !ok {
						t = string(s)
						tagOf[t] = t
					}
					if slices.Contains(tags, t) {
						return nil
					}
					tags = append(tags, t)
					if !q.comma(']') {
						return nil
					}
				}
			default:
				return nil
			}
			if !q.comma('}') {
				return nil
			}
		}
		if !haveKey || (owner != "") == (len(tags) > 0) {
			return nil
		}
		addNode(nb, name, key, owner, tags)
		if !q.comma('}') {
			return nil
		}
	}
	if q.i != len(b) {
		return nil
	}
	return nb.finish() // nil if a name came twice
}

// quickReader reads the plain HuJSON that quickNodes takes: white space
// and comments between values are stepped over as skimmer does.
type quickReader struct{ skimmer }

// str reads a string of printable ASCII without escapes and returns what
// is between its quotes.
func (q *quickReader) str() ([]byte, bool) {
	if !q.eat('"') {
		return nil, false
	}
	start := q.i
	for ; q.i < len(q.b); q.i++ {
		switch c := q.b[q.i]; {
		case c == '"':
			q.i++
			return q.b[start : q.i-1], true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

// comma steps over the white space and comma after a value, or reports
// whether close comes next (and leaves it to be read).
func (q *quickReader) comma(close byte) bool {
	if q.space(); q.eat(',') {
		return true
	}
	return q.i < len(q.b) && q.b[q.i] == close
}

// allASCII reports whether b holds only bytes below 0x80 (eight at a time:
// "nodes" run to 10 MB).
func allASCII(b []byte) bool {
	for ; len(b) >= 8; b = b[8:] {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return false
		}
	}
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
