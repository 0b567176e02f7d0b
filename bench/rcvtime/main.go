// Command rcvtime is the receiving end of a bench/run --wan bulk transfer:
// it reads stdin to its end and reports how many bytes came and the time
// from the first byte to the last, so that neither the login nor the
// session's end is counted. It rewrites its report to -out every half
// second as well, so a transfer cut off at the bench's cap still reports
// how far it got.
//
//	ssh host 'head -c 16M /dev/zero' | rcvtime -out down.txt
//
// The report is one line: bytes, seconds from first to last byte, and
// "done" or "partial".
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	out := flag.String("out", "", "`file` the report is (re)written to; stdout when empty")
	flag.Parse()
	var (
		mu          sync.Mutex
		n           int64
		first, last time.Time
		done        bool
	)
	report := func() {
		mu.Lock()
		state := "partial"
		if done {
			state = "done"
		}
		line := fmt.Sprintf("%d %.4f %s\n", n, last.Sub(first).Seconds(), state)
		mu.Unlock()
		if *out == "" {
			if done {
				os.Stdout.WriteString(line)
			}
			return
		}
		tmp := *out + ".tmp"
		if err := os.WriteFile(tmp, []byte(line), 0o644); err == nil {
			os.Rename(tmp, *out)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGPIPE)
	go func() {
		<-sig
		report()
		os.Exit(1)
	}()
	go func() {
		for range time.Tick(500 * time.Millisecond) {
			report()
		}
	}()
	buf := make([]byte, 256<<10)
	for {
		k, err := os.Stdin.Read(buf)
		if k > 0 {
			now := time.Now()
			mu.Lock()
			if n == 0 {
				first = now
			}
			n += int64(k)
			last = now
			mu.Unlock()
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Printf("rcvtime: %v", err)
			break
		}
	}
	mu.Lock()
	done = true
	mu.Unlock()
	report()
}
