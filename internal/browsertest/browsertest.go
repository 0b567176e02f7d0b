// Package browsertest starts a real headless Chromium for the tests that
// drive a page (the check page, the web terminal, the recordings page)
// through chromedp.
//
// Chromium is a part the machine may lack: without it a test skips by
// hand and fails under CI=true (see testkit.SkipOrFail); .ci/run installs
// it.
package browsertest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// Options says how to start the browser.
type Options struct {
	// Proxy is a SOCKS5 proxy ("host:port") for all of the browser's
	// traffic, such as `sshmesh proxy` puts the browser on the mesh with;
	// "" means none.
	Proxy string
	// Width and Height size the window; 0 means 1280×800.
	Width, Height int
}

// Start starts headless Chromium for tb and returns a chromedp context for
// its first tab. The browser, its profile and its scratch files go away
// when tb ends.
func Start(tb testing.TB, o Options) context.Context {
	tb.Helper()
	path := testkit.NeedBinary(tb, "chromium", "chromium")
	out := &testkit.Buffer{}
	w, h := o.Width, o.Height
	if w == 0 || h == 0 {
		w, h = 1280, 800
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // the tests run as root
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(w, h),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.Env("TMPDIR=" + shortTempDir(tb)), // its scratch dirs go away with the test
		chromedp.CombinedOutput(out),
	}
	if o.Proxy != "" {
		opts = append(opts, chromedp.ProxyServer("socks5://"+o.Proxy))
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	tb.Cleanup(func() {
		cancelC()
		cancelA()
	})
	// Start the browser now, so its start-up is not in a step's timeout.
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatalf("start chromium: %v\n%s", err, out.String())
	}
	return ctx
}

// shortTempDir is a temp dir with a short path: Chromium puts a unix
// socket in TMPDIR, socket paths are limited to 108 bytes, and a subtest's
// t.TempDir carries its long name.
func shortTempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "chr-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Visit opens u in the browser and returns the HTTP status.
func Visit(tb testing.TB, bctx context.Context, u string) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(u))
	if err != nil {
		tb.Fatalf("navigate %s: %v", u, err)
	}
	return int(resp.Status)
}

// Text returns the text of the element that CSS selector sel picks on the
// current page, waiting up to 10 s for it to be visible.
func Text(tb testing.TB, bctx context.Context, sel string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		tb.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// Screenshot saves a PNG of the whole page to path (in the test's temp
// dir, so a person can look at what the page looked like).
func Screenshot(tb testing.TB, bctx context.Context, path string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG; any other quality is JPEG
	if err != nil {
		tb.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.Fatalf("screenshot: %v", err)
	}
}
