package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadFileLeavesNodesOut: for a reload that changes a rule, ReadFile
// keeps the rest of the file and not the nodes, and ReparseFile shares
// the document's nodes and decides with the new rule; a file whose nodes
// changed is read whole and compiled anew; a first load reads whole.
func TestReadFileLeavesNodesOut(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.hujson")
	write := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before, ruleChanged := scaleDoc(1000, -1), scaleDoc(1000, 99)
	write(before)
	first, err := ReadFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.data) != len(before) {
		t.Fatalf("a first load read %d bytes of %d", len(first.data), len(before))
	}
	prev, err := (*Document)(nil).ReparseFile(first)
	if err != nil {
		t.Fatal(err)
	}

	write(ruleChanged)
	f, err := ReadFile(path, prev)
	if err != nil {
		t.Fatal(err)
	}
	if kept := len(f.data) + len(f.cut.head) + len(f.cut.tail); f.data != nil || kept > len(ruleChanged)/5 {
		t.Fatalf("ReadFile kept %d bytes of %d (whole: %v)", kept, len(ruleChanged), f.data != nil)
	}
	doc, err := prev.ReparseFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if doc.nodeSet != prev.nodeSet {
		t.Error("a rule change compiled the nodes again")
	}
	server, _ := doc.NodeByName("server")
	caller, _ := doc.NodeByName("c99") // owner u99, the changed rule's
	for d, want := range map[*Document]Action{prev: Reject, doc: Accept} {
		got, err := d.Evaluate(t.Context(), Request{Key: caller.Key, Self: server.Key, User: "deploy"})
		if err != nil || got.Action != want {
			t.Errorf("c99 → server as deploy: %v, %v, want %v", got.Action, err, want)
		}
	}

	nodeChanged := strings.Replace(string(ruleChanged), `"c5": `, `"c5x": `, 1)
	write([]byte(nodeChanged))
	if f, err = ReadFile(path, doc); err != nil {
		t.Fatal(err)
	}
	if len(f.data) != len(nodeChanged) {
		t.Fatalf("nodes changed: ReadFile read %d bytes of %d", len(f.data), len(nodeChanged))
	}
	next, err := doc.ReparseFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := next.NodeByName("c5x"); !ok || next.nodeSet == doc.nodeSet {
		t.Errorf("the changed nodes were not compiled (c5x found: %v)", ok)
	}
}

// TestLinesSkipped: offsets before and after a part of a file whose line
// starts are skipped (read in chunks of any size) have the line and column
// they have in the whole file.
func TestLinesSkipped(t *testing.T) {
	data := []byte("a\nbb\n{\n x\n\n y\n} c\nd\n\nend")
	start, end := strings.Index(string(data), "{"), strings.Index(string(data), "}")+1
	whole := newLines(data)
	for chunk := 1; chunk <= end-start; chunk++ {
		var l lines
		l.add(data[:start], 0)
		for off := start; off < end; off += chunk {
			l.skip(data[off:min(off+chunk, end)], off)
		}
		l.add(data[end:], end)
		for off := range len(data) {
			if off >= start && off < end {
				continue
			}
			wl, wc := whole.at(off)
			if gl, gc := l.at(off); gl != wl || gc != wc {
				t.Fatalf("chunks of %d: offset %d at %d:%d, want %d:%d", chunk, off, gl, gc, wl, wc)
			}
		}
	}
}
