package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// File is a policy file as [ReadFile] read it for a reload: its digest,
// and what [Document.ReparseFile] needs of its bytes.
type File struct {
	// Sum identifies the file's bytes as ReadFile read them: it is
	// [Document.Sum] of the document they parse to. It is zero when
	// ReadFile cannot tell it without parsing (the file was read whole,
	// see ReadFile): parse it then (ReparseFile) and take the document's.
	// ReparseFile may read the file again; the document's Sum is then
	// that of the bytes it parsed, and this one is not changed.
	Sum  [sha256.Size]byte
	path string
	// data is the whole file, when the nodes are not those of the
	// document it was read for; else cut holds the rest of it.
	data []byte
	cut  cutFile
	// ns are the nodes cut out: those of the document it was read for.
	ns *nodeSet
}

// readChunk is how much of a "nodes" value ReadFile reads at a time.
const readChunk = 256 << 10

// ReadFile reads the policy file at path for a reload of prev (nil: a
// first load). Where prev's "nodes" value was, the bytes are read a chunk
// at a time into digests and not kept when they are prev's nodes byte for
// byte: a reload that changes a rule of a 10 MB policy of 100,000 nodes
// then holds the rest of the file (its rules), not all of it. Otherwise
// the file is read whole.
func ReadFile(path string, prev *Document) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if err := checkSize(st.Size(), path); err != nil {
		return nil, err
	}
	if prev == nil || prev.nodeSet == nil || int64(prev.nodesAt[1]) > st.Size() || !st.Mode().IsRegular() {
		return readWhole(f, path)
	}
	if pf, err := readCut(f, path, prev); err != nil || pf != nil {
		return pf, err
	}
	// Other nodes (or a file that changed while it was read): the whole
	// file is parsed, so read it whole.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("policy: %s: %w", path, err)
	}
	return readWhole(f, path)
}

// readCut reads f, the policy file at path, leaving out prev's nodes. It
// returns nil (and no error) if the bytes where they were are not
// theirs, or end before they do.
func readCut(f *os.File, path string, prev *Document) (*File, error) {
	start, end := prev.nodesAt[0], prev.nodesAt[1]
	nodes := sha256.New()
	cut := cutFile{head: make([]byte, start)}
	if _, err := io.ReadFull(f, cut.head); err != nil {
		return nil, nil
	}
	cut.lines.add(cut.head, 0)
	buf := make([]byte, min(readChunk, end-start))
	for off := start; off < end; {
		b := buf[:min(len(buf), end-off)]
		if _, err := io.ReadFull(f, b); err != nil {
			return nil, nil
		}
		nodes.Write(b)
		cut.lines.skip(b, off)
		off += len(b)
	}
	if !bytes.Equal(nodes.Sum(nil), prev.nodeSet.sum[:]) {
		return nil, nil
	}
	tail, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("policy: %s: %w", path, err)
	}
	cut.tail, cut.size = tail, end+len(tail)
	cut.lines.add(tail, end)
	// The nodes' digest is the document's (compared above): the file's
	// is made from it, so that their bytes are hashed once.
	return &File{Sum: fileSum(cut.head, &prev.nodeSet.sum, tail), path: path, cut: cut, ns: prev.nodeSet}, nil
}

// readWhole reads all of f, the policy file at path.
func readWhole(f *os.File, path string) (*File, error) {
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("policy: %s: %w", path, err)
	}
	return &File{path: path, data: data}, nil
}

// fileSum is [Document.Sum] of a policy file: a digest of the bytes
// before its "nodes" value (head), that value's SHA-256 (nil: the file
// has none; head is then all of it) and the bytes after (tail). A reload
// that finds the nodes unchanged then hashes their bytes once, not twice.
// Two files have the same sum only if their bytes are the same (or
// SHA-256 collides).
func fileSum(head []byte, nodes *[sha256.Size]byte, tail []byte) [sha256.Size]byte {
	h := sha256.New()
	var n [9]byte
	binary.BigEndian.PutUint64(n[:8], uint64(len(head)))
	if nodes != nil {
		n[8] = 1
	}
	h.Write(n[:])
	h.Write(head)
	if nodes != nil {
		h.Write(nodes[:])
	}
	h.Write(tail)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// Sum identifies the bytes the document was parsed from: two documents
// parsed from the same bytes have the same Sum, and [File.Sum] of a file
// with those bytes is it (when not zero). A reload compares them to skip
// a file that did not change.
func (doc *Document) Sum() [sha256.Size]byte { return doc.sum }

// ReparseFile parses f as [Document.Reparse] parses the file's bytes, with
// the same result and the same errors, f having been read by [ReadFile]
// for doc. When f left doc's nodes out and the rest of the file cannot
// take them after all (its syntax is broken, or a tag of theirs is no
// longer declared), the file is read again, whole, to be parsed and
// reported as Parse does. The document's Sum is that of the bytes parsed.
func (doc *Document) ReparseFile(f *File) (*Document, error) {
	if f.data != nil {
		return doc.Reparse(f.data, f.path)
	}
	// f read for another document left that one's nodes out, which
	// need not be doc's: then the whole file is read.
	if f.ns == doc.nodeSet {
		if d, ok, err := parseRest(doc.nodeSet, f.cut, f.path); ok {
			return d, err
		}
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	f.data, f.cut = data, cutFile{}
	return Parse(data, f.path)
}
