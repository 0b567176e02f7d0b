package forward

import (
	"context"
	"testing"
)

// closer counts its Close calls.
type closer struct{ n int }

func (c *closer) Close() error { c.n++; return nil }

// TestStateLifecycle: the zero State holds listeners once opened, a name
// only once; Close closes what it holds, and nothing is held after it.
func TestStateLifecycle(t *testing.T) {
	var st State
	if st.removeListener("tcp:127.0.0.1:1") {
		t.Error("removeListener on a fresh State reported a listener")
	}
	s := st.open(context.Background())
	if s == nil {
		t.Fatal("open on a fresh State returned nil")
	}
	var l1, l2 closer
	if !s.addListener("tcp:127.0.0.1:1", &l1) {
		t.Fatal("addListener refused a free name")
	}
	s.wg.Done() // no accept loop in this test
	if s.addListener("tcp:127.0.0.1:1", &l2) {
		t.Error("addListener took a name twice")
	}
	st.Close()
	if l1.n != 1 || l2.n != 0 {
		t.Errorf("after Close: closed %d and %d times, want 1 and 0", l1.n, l2.n)
	}
	if st.open(context.Background()) != nil {
		t.Error("open after Close returned a State")
	}
	st.Close() // a second Close is a no-op
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var st2 State
	if st2.open(ctx) != nil {
		t.Error("open with a done context returned a State")
	}
}
