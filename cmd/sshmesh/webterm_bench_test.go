package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sshmesh/sshmesh/internal/browsertest"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// BenchmarkWebTerminal compares the web terminal with the stock ssh
// client on the same mesh and server, logging in as root to a login shell
// with a PTY (both sessions recorded):
//
//   - open-ms, prompt-ms: from opening (a new WebSocket in the page,
//     already loaded; a new `ssh -tt` process through `sshmesh nc`) to the
//     first byte of output (the motd), and to the shell's prompt. ssh's
//     figures include starting ssh and nc and nc's mesh node; the page's
//     mesh is `sshmesh proxy`, already up.
//   - echo-ms: one keystroke sent, until its echo arrives.
//
// The page's figures are taken in the page with performance.now() over
// the page's own protocol (as app.js speaks it, without xterm.js drawing);
// ssh's with a pipe on ssh's stdin and stdout. Run as root:
//
//	go test -run '^$' -bench WebTerminal -benchtime 500x -count 3 ./cmd/sshmesh
func BenchmarkWebTerminal(b *testing.B) {
	w := startWebWorld(b)
	page, _ := webBrowser(b, w.aliceConf, 0, 0)
	if code := browsertest.Visit(b, page, webURL); code != 200 {
		b.Fatalf("the page: HTTP %d", code)
	}
	b.Run("web", func(b *testing.B) {
		js := fmt.Sprintf(webBenchJS, b.N)
		ctx, cancel := context.WithTimeout(page, 5*time.Minute)
		defer cancel()
		b.ResetTimer()
		r, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](js, chromedp.EvalAwaitPromise))
		if err != nil {
			b.Fatalf("the page's benchmark: %v", err)
		}
		b.ReportMetric(r[0], "open-ms")
		b.ReportMetric(r[2], "prompt-ms")
		b.ReportMetric(r[1]/float64(b.N), "echo-ms")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("ssh", func(b *testing.B) {
		ssh := sshmeshtest.NeedBinary(b, "ssh", "openssh-client")
		args := append(append(meshClientOptions(w.sshConf), noAgent...), "-tt", "-o", "LogLevel=ERROR", "root@100.64.0.1")
		cmd := exec.Command(ssh, args...)
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		out := make(chan []byte, 1024)
		go func() {
			defer close(out)
			for {
				buf := make([]byte, 4096)
				n, err := stdout.Read(buf)
				if n > 0 {
					out <- buf[:n]
				}
				if err != nil {
					return
				}
			}
		}()
		b.ResetTimer()
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() {
			cmd.Process.Kill()
			cmd.Wait()
		}()
		// Until the prompt: the first byte, then "# ".
		var seen []byte
		first := time.Duration(0)
		timeout := time.After(60 * time.Second)
		for !bytes.HasSuffix(bytes.TrimRight(seen, " "), []byte("#")) {
			select {
			case p, ok := <-out:
				if !ok {
					b.Fatalf("ssh ended: %q", seen)
				}
				if first == 0 {
					first = time.Since(t0)
				}
				seen = append(seen, p...)
			case <-timeout:
				b.Fatalf("no prompt from ssh in 60 s: %q", seen)
			}
		}
		prompt := time.Since(t0)
		var echo time.Duration
		for i := 0; i < b.N; i++ {
			t := time.Now()
			io.WriteString(stdin, "x")
			for got := false; !got; {
				p, ok := <-out
				if !ok {
					b.Fatal("ssh ended")
				}
				got = bytes.Contains(p, []byte("x"))
			}
			echo += time.Since(t)
		}
		b.ReportMetric(float64(first.Microseconds())/1000, "open-ms")
		b.ReportMetric(float64(prompt.Microseconds())/1000, "prompt-ms")
		b.ReportMetric(float64(echo.Microseconds())/1000/float64(b.N), "echo-ms")
		b.ReportMetric(0, "ns/op")
	})
}

// webBenchJS opens a terminal as root in the page, as app.js does, and
// resolves to [ms from open to the first output byte, total ms of n
// keystroke echo round trips, ms from open to the prompt].
const webBenchJS = `(async (n) => {
  const q = new URLSearchParams({ user: 'root', token: document.body.dataset.token, cols: 80, rows: 24 });
  let waiting = null, text = '';
  const next = () => new Promise((r) => { waiting = r; });
  const t0 = performance.now();
  let first = 0;
  const ws = new WebSocket('ws://' + location.host + '/ws?' + q);
  ws.binaryType = 'arraybuffer';
  const dec = new TextDecoder();
  ws.onmessage = (ev) => {
    if (typeof ev.data === 'string') return;
    if (!first) first = performance.now() - t0;
    text += dec.decode(ev.data);
    if (waiting) { const w = waiting; waiting = null; w(); }
  };
  while (!/# *$/.test(text)) await next();
  const prompt = performance.now() - t0;
  const enc = new TextEncoder();
  let total = 0;
  for (let i = 0; i < n; i++) {
    text = '';
    const t = performance.now();
    ws.send(enc.encode('x'));
    while (!text.includes('x')) await next();
    total += performance.now() - t;
  }
  ws.close();
  return [first, total, prompt];
})(%d)`
