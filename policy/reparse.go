package policy

import (
	"bytes"
	"crypto/sha256"

	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/tailscale/hujson"
)

// nodeIndex returns the index in doc.nodeSet of the node called name.
func (doc *Document) nodeIndex(name string) (int32, bool) {
	return doc.nodeSet.findName(name)
}

// nodeByKey returns the index in doc.nodeSet of the node with key k.
func (doc *Document) nodeByKey(k meshkey.Public) (int32, bool) {
	return doc.nodeSet.findKey(k)
}

// Reparse parses data, a new version of doc's file, as [Parse] does, with
// the same result and the same errors; doc itself does not change. When
// the new "nodes" value is byte for byte doc's, the nodes doc compiled
// from it are used again (shared by both documents) and only the rest of
// the file is parsed: with 100,000 nodes, a reload that changes a rule
// (or a group, a test) then costs what the rules cost. A nil doc parses
// data whole.
func (doc *Document) Reparse(data []byte, file string) (*Document, error) {
	if doc == nil || doc.nodeSet == nil || len(data) > maxDocumentSize {
		return Parse(data, file)
	}
	// Where the nodes were, they usually still are: the hash tells, and
	// parseWith checks that they are the value of "nodes".
	start, end := doc.nodesAt[0], doc.nodesAt[1]
	if end > len(data) || sha256.Sum256(data[start:end]) != doc.nodeSet.sum {
		var ok bool
		start, end, ok = nodesValue(data)
		if !ok || sha256.Sum256(data[start:end]) != doc.nodeSet.sum {
			return Parse(data, file)
		}
	}
	if doc, ok, err := parseWith(doc.nodeSet, data, start, end, file); ok {
		return doc, err
	}
	return Parse(data, file)
}

// parseWith compiles data with ns, compiled from data[start:end], its
// "nodes" value, as its nodes: only the rest of the file is parsed. ok is
// false when ns cannot be used after all (see compiler.adoptNodes), or
// the rest has a syntax error (whose place only a parse of the whole file
// reports right): Parse must then compile the whole.
func parseWith(ns *nodeSet, data []byte, start, end int, file string) (doc *Document, ok bool, err error) {
	return parseRest(ns, cutFile{head: data[:start], tail: data[end:], size: len(data), lines: newLines(data)}, file)
}

// cutFile is a policy file without the bytes of its "nodes" value: those
// before it (head) and after it (tail), its size, and where its lines
// start.
type cutFile struct {
	head, tail []byte
	size       int
	lines      lines
}

// parseRest compiles f with ns, compiled from the bytes f leaves out, as
// its nodes: ok and err are parseWith's.
func parseRest(ns *nodeSet, f cutFile, file string) (doc *Document, ok bool, err error) {
	start, end := len(f.head), f.size-len(f.tail)
	// The file with "{}" for its nodes: every other offset is that of
	// the file, or gap bytes short of it.
	rest := make([]byte, 0, len(f.head)+2+len(f.tail))
	rest = append(append(append(rest, f.head...), "{}"...), f.tail...)
	v, err := hujson.Parse(rest)
	if err != nil {
		return nil, false, nil
	}
	c := newCompiler(file, f.lines)
	c.cut, c.gap = start+2, end-start-2
	c.reuse = ns
	c.doc.nodesAt = [2]int{start, end}
	c.document(&v)
	if c.needFull || c.doc.nodeSet != ns {
		// ns was not adopted as the value of "nodes" (say the stand-in
		// fell into a comment): the whole file is parsed.
		return nil, false, nil
	}
	doc, err = c.finish()
	if err == nil {
		doc.sum = fileSum(f.head, &ns.sum, f.tail)
	}
	return doc, true, err
}

// nodesValue finds the value of the top-level key "nodes" in a HuJSON
// document: data[start:end]. ok is false when there is no such key, or
// two, or a key spelled with escapes, or the document is not well formed
// enough to tell; Reparse then parses the whole. It only finds: Reparse
// checks what it found (the hash of the bytes, and that hujson puts the
// nodes there too).
func nodesValue(data []byte) (start, end int, ok bool) {
	s := skimmer{b: data}
	if s.space(); !s.eat('{') {
		return 0, 0, false
	}
	for {
		if s.space(); s.eat('}') {
			return start, end, ok
		}
		ks := s.i
		if !s.str() {
			return 0, 0, false
		}
		key := data[ks+1 : s.i-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return 0, 0, false
		}
		if s.space(); !s.eat(':') {
			return 0, 0, false
		}
		s.space()
		vs := s.i
		if !s.value() {
			return 0, 0, false
		}
		if string(key) == "nodes" {
			if ok {
				return 0, 0, false
			}
			start, end, ok = vs, s.i, true
		}
		if s.space(); !s.eat(',') {
			if s.space(); !s.eat('}') {
				return 0, 0, false
			}
			return start, end, ok
		}
	}
}

// skimmer steps over HuJSON values without building them.
type skimmer struct {
	b []byte
	i int
}

// eat steps over c if it is next.
func (s *skimmer) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// space steps over white space and comments.
func (s *skimmer) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		case '/':
			if !s.comment() {
				return
			}
		default:
			return
		}
	}
}

// comment steps over the comment at s.i, if there is one.
func (s *skimmer) comment() bool {
	if s.i+1 >= len(s.b) {
		return false
	}
	switch s.b[s.i+1] {
	case '/':
		if j := bytes.IndexByte(s.b[s.i:], '\n'); j >= 0 {
			s.i += j + 1
		} else {
			s.i = len(s.b)
		}
		return true
	case '*':
		j := bytes.Index(s.b[s.i+2:], []byte("*/"))
		if j < 0 {
			return false
		}
		s.i += 2 + j + 2
		return true
	}
	return false
}

// str steps over the string at s.i.
func (s *skimmer) str() bool {
	if !s.eat('"') {
		return false
	}
	for {
		j := bytes.IndexByte(s.b[s.i:], '"')
		if j < 0 {
			return false
		}
		if k := bytes.IndexByte(s.b[s.i:s.i+j], '\\'); k >= 0 {
			s.i += k + 2 // a backslash and the byte it escapes
			if s.i > len(s.b) {
				return false
			}
			continue
		}
		s.i += j + 1
		return true
	}
}

// value steps over the value at s.i: an object or array with everything
// in it, a string, or a literal.
func (s *skimmer) value() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		return s.str()
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if !s.str() {
					return false
				}
				continue
			case '/':
				if !s.comment() {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	}
	j := s.i
	for j < len(s.b) && (s.b[j] == '-' || s.b[j] == '+' || s.b[j] == '.' || 'a' <= s.b[j] && s.b[j] <= 'z' || 'A' <= s.b[j] && s.b[j] <= 'Z' || '0' <= s.b[j] && s.b[j] <= '9') {
		j++
	}
	if j == s.i {
		return false
	}
	s.i = j
	return true
}
