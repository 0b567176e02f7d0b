// Command echotime measures keystroke echo round trips through an
// interactive session: it starts a command (the stock ssh client with -tt,
// so the server gives the session a PTY), types one byte at a time into its
// stdin and times how long the byte takes to come back on its stdout (the
// remote PTY's echo), like a typist who waits for each character to appear.
//
//	echotime -n 300 -gap 20ms -- ssh -tt host 'stty -icanon; exec cat > /dev/null'
//
// The remote command should echo each byte once and print nothing else
// (the PTY's line discipline echoes; `stty -icanon` keeps the line buffer
// from filling; cat discards the input). Before timing, echotime types a
// marker until its echo arrives, so the login and the session's start are
// not counted. The report is one line: median and 99th percentile in ms,
// and how many round trips were timed.
//
// With -floor, echotime times the same echo through a local PTY instead:
// script(1) runs the echo command above in a fresh PTY, with no ssh and no
// mesh (script relays the bytes as the ssh client does). Measured beside
// the same load, it is the floor: what the kernel's scheduling alone costs
// on this machine at that moment (bench/run and bench/echoab report it).
//
//	echotime -floor -n 300 -gap 20ms
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"time"
)

func main() {
	n := flag.Int("n", 200, "`count` of round trips to time")
	gap := flag.Duration("gap", 20*time.Millisecond, "pause between a byte's echo and the next byte")
	timeout := flag.Duration("timeout", 10*time.Second, "give up when an echo takes longer than this")
	start := flag.Duration("start", 120*time.Second, "give up when the session has not echoed by then")
	floor := flag.Bool("floor", false, "time the echo of a local PTY (script(1) running "+strconv.Quote(echoCommand)+"; no command)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: echotime [-n N] [-gap D] -- command [args...]\n       echotime -floor [-n N] [-gap D]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	argv := flag.Args()
	if *floor {
		argv = floorCommand(argv)
	}
	if len(argv) == 0 || *n < 1 {
		flag.Usage()
		os.Exit(2)
	}
	rtts, err := run(argv, *n, *gap, *timeout, *start)
	if err != nil {
		log.Fatalf("echotime: %v", err)
	}
	p50, p99 := percentiles(rtts)
	fmt.Printf("%.2f %.2f %d\n", p50, p99, len(rtts))
}

// echoCommand echoes each byte typed into its PTY once and prints nothing
// else: the PTY's line discipline echoes, `stty -icanon` keeps the line
// buffer from filling, cat discards the input.
const echoCommand = "stty -icanon; exec cat > /dev/null"

// floorCommand is the command -floor times: echoCommand in a fresh local
// PTY (script -q: no start and end lines; -f: each echo relayed at once),
// or nil when the caller also named a command (-floor takes none).
func floorCommand(args []string) []string {
	if len(args) > 0 {
		return nil
	}
	return []string{"script", "-qfc", echoCommand, "/dev/null"}
}

// run starts the command, waits for its session to echo, then times n round
// trips of one byte each.
func run(argv []string, n int, gap, timeout, start time.Duration) ([]time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	}()
	echoes := make(chan byte, 64)
	go func() {
		r := bufio.NewReader(out)
		for {
			b, err := r.ReadByte()
			if err != nil {
				close(echoes)
				return
			}
			echoes <- b
		}
	}()
	// Ready: type the marker until it comes back (the first ones may go
	// before the remote stty has run and come back twice; drain them).
	const marker = '#'
	deadline := time.After(start)
ready:
	for {
		if _, err := in.Write([]byte{marker}); err != nil {
			return nil, fmt.Errorf("session ended before it echoed: %w", err)
		}
		tick := time.After(500 * time.Millisecond)
		for {
			select {
			case b, ok := <-echoes:
				if !ok {
					return nil, fmt.Errorf("session ended before it echoed")
				}
				if b == marker {
					break ready
				}
			case <-tick:
				continue ready
			case <-deadline:
				return nil, fmt.Errorf("no echo within %v", start)
			}
		}
	}
	drain(echoes, 300*time.Millisecond)

	rtts := make([]time.Duration, 0, n)
	timer := time.NewTimer(timeout)
	for i := range n {
		c := byte('a' + i%26)
		t0 := time.Now()
		if _, err := in.Write([]byte{c}); err != nil {
			return rtts, fmt.Errorf("round trip %d: %w", i, err)
		}
		timer.Reset(timeout)
	wait:
		for {
			select {
			case b, ok := <-echoes:
				if !ok {
					return rtts, fmt.Errorf("round trip %d: session ended", i)
				}
				if b == c {
					break wait
				}
			case <-timer.C:
				return rtts, fmt.Errorf("round trip %d: no echo within %v", i, timeout)
			}
		}
		rtts = append(rtts, time.Since(t0))
		time.Sleep(gap)
	}
	return rtts, nil
}

// drain discards what arrives on c until it has been quiet for d.
func drain(c <-chan byte, d time.Duration) {
	for {
		select {
		case _, ok := <-c:
			if !ok {
				return
			}
		case <-time.After(d):
			return
		}
	}
}

// percentiles returns the median and the 99th percentile (nearest rank) of
// d in milliseconds.
func percentiles(d []time.Duration) (p50, p99 float64) {
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(q float64) float64 {
		k := int(q*float64(len(s))+0.999999) - 1
		k = max(0, min(k, len(s)-1))
		return float64(s[k].Microseconds()) / 1000
	}
	return rank(0.50), rank(0.99)
}
