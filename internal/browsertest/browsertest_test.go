package browsertest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestStartVisitText serves a page on loopback and reads it back through
// the real browser: the harness the page tests stand on works.
func TestStartVisitText(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>t</title><p id="who">%s</p><script>document.getElementById("who").textContent += " ran";</script>`, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	ctx := Start(t, Options{})
	if got := Visit(t, ctx, "http://"+ln.Addr().String()+"/hello"); got != 200 {
		t.Fatalf("status %d, want 200", got)
	}
	if got, want := Text(t, ctx, "#who"), "/hello ran"; got != want {
		t.Fatalf("text %q, want %q (the page's script must have run)", got, want)
	}
	shot := filepath.Join(t.TempDir(), "page.png")
	Screenshot(t, ctx, shot)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 100 {
		t.Fatalf("screenshot %s: %v (size %v)", shot, err, fi)
	}
}
