package policy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A node's Tags, as the accessors return them, are its own: changing them
// in place changes neither the document nor the other nodes with the same
// tags (which share storage).
func TestAccessorTagsAreCopies(t *testing.T) {
	doc, err := Parse([]byte(withKeys(`{
  "tagOwners": {"tag:web": [], "tag:recorder": []},
  "nodes": {
    "web1": {"key": "KEY1", "tags": ["tag:web"]},
    "web2": {"key": "KEY2", "tags": ["tag:web"]},
    "rec":  {"key": "KEY3", "tags": ["tag:recorder"]},
  },
  "ssh": [{"action": "accept", "src": ["tag:web"], "dst": ["tag:web"], "users": ["root"]}],
}`)), "t")
	if err != nil {
		t.Fatal(err)
	}
	web1, _ := doc.NodeByName("web1")
	web1.Tags[0] = "tag:recorder"
	byKey, _ := doc.Node(testKey(1))
	byKey.Tags[0] = "tag:recorder"
	all := doc.Nodes()
	all[0].Tags[0] = "tag:recorder"
	named := doc.NodesNamed("tag:web")
	named[1].Tags[0] = "tag:recorder"
	one := doc.NodesNamed("web2")
	one[0].Tags[0] = "tag:recorder"
	for _, name := range []string{"web1", "web2"} {
		if id, _ := doc.NodeByName(name); id.Tags[0] != "tag:web" {
			t.Errorf("%s's tags are now %v", name, id.Tags)
		}
	}
	if n := len(doc.NodesNamed("tag:recorder")); n != 1 {
		t.Errorf("%d nodes tagged tag:recorder, want 1", n)
	}
	dec, err := doc.Evaluate(context.Background(), Request{Key: testKey(1), Self: testKey(2), User: "root"})
	if err != nil || dec.Action != Accept || dec.Caller.Tags[0] != "tag:web" {
		t.Errorf("Evaluate after the changes: %+v, %v", dec, err)
	}
}

// A file whose old nodes' bytes stay where they were but fall inside a
// comment is parsed whole by ReparseFile and Reparse, as Parse parses it:
// the stand-in for the nodes must not vanish into the comment with them.
func TestReparseStandInInComment(t *testing.T) {
	key := testKey(1).String()
	nodes := `{"s": {"key": "` + key + `", "tags": ["tag:s"]} /* the server */}`
	oldHead := "{\n  \"identity\": \"mesh\",\n  \"tagOwners\": {\"tag:s\": []},\n  \"nodes\": "
	tail := ",\n  \"ssh\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"tag:s\"], \"users\": [\"root\"]}],\n}\n"
	newHead := "{\"identity\":\"tailnet\",\n  \"tagOwners\": {\"tag:s\": []},\n/*\"nodes\": "
	newHead += strings.Repeat(" ", len(oldHead)-len(newHead)) // the nodes at the same offset
	newData := newHead + nodes + " */" + tail[1:]
	path := filepath.Join(t.TempDir(), "p.hujson")
	prev, err := Parse([]byte(oldHead+nodes+tail), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(newData), 0o600); err != nil {
		t.Fatal(err)
	}
	_, perr := Parse([]byte(newData), path)
	if perr == nil {
		t.Fatal("Parse accepts the file")
	}
	f, err := ReadFile(path, prev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prev.ReparseFile(f); err == nil || err.Error() != perr.Error() {
		t.Errorf("ReparseFile: %v, want Parse's %v", err, perr)
	}
	if _, err := prev.Reparse([]byte(newData), path); err == nil || err.Error() != perr.Error() {
		t.Errorf("Reparse: %v, want Parse's %v", err, perr)
	}
}

// A File read for one document gives another document's ReparseFile the
// file as written, not the other document's nodes.
func TestReparseFileOtherDocument(t *testing.T) {
	mk := func(owner string) string {
		return withKeys(`{
  "nodes": {"a": {"key": "KEY1", "owner": "` + owner + `"}, "b": {"key": "KEY2", "owner": "bob@x.io"}},
  "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["root"]}],
}`)
	}
	path := filepath.Join(t.TempDir(), "p.hujson")
	docA, err := Parse([]byte(mk("alice@x.io")), path)
	if err != nil {
		t.Fatal(err)
	}
	docB, err := Parse([]byte(mk("mallo@x.io")), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(mk("alice@x.io")), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(path, docA)
	if err != nil {
		t.Fatal(err)
	}
	got, err := docB.ReparseFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := got.NodeByName("a"); id.Owner != "alice@x.io" {
		t.Errorf("node a's owner is %q, the file says alice@x.io", id.Owner)
	}
}

// A document over maxDocumentSize is refused with an error naming the
// file, whichever way it is read.
func TestDocumentSizeLimit(t *testing.T) {
	if err := checkSize(maxDocumentSize, "p.hujson"); err != nil {
		t.Errorf("the largest document is refused: %v", err)
	}
	err := checkSize(maxDocumentSize+1, "p.hujson")
	if err == nil || !strings.HasPrefix(err.Error(), "p.hujson:1:1: ") {
		t.Errorf("checkSize(max+1) = %v", err)
	}
	// A sparse file just over the limit: ReadFile refuses it before reading.
	path := filepath.Join(t.TempDir(), "big.hujson")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(maxDocumentSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := ReadFile(path, nil); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("ReadFile of a %d-byte file: %v", maxDocumentSize+1, err)
	}
}
