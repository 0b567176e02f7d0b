package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sshmesh/sshmesh/asciicast"
)

// cmdReplay prints a session recording back in real time (or faster):
// output events in order, with the recorded pauses divided by --speed and
// capped by --idle-limit.
func cmdReplay(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("replay", "[--speed N] [--idle-limit D] FILE", io)
	speed := fs.Float64("speed", 1, "play this many times faster")
	idle := fs.Duration("idle-limit", 0, "cap each pause at this long (0: as recorded)")
	if err := parseFlags(fs, reorderFlags(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 || *speed <= 0 {
		fs.Usage()
		return errUsage
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	return replay(ctx, f, io.out, *speed, *idle, func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	})
}

// replay writes r's output events to out, sleeping between them with
// sleep (which reports false to stop).
func replay(ctx context.Context, r io.Reader, out io.Writer, speed float64, idle time.Duration, sleep func(time.Duration) bool) error {
	rd, err := asciicast.NewReader(r)
	if err != nil {
		return err
	}
	last := 0.0
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if ev.Code != asciicast.Output {
			continue
		}
		if pause := time.Duration((ev.Time - last) / speed * float64(time.Second)); pause > 0 {
			if idle > 0 && pause > idle {
				pause = idle
			}
			if !sleep(pause) {
				return ctx.Err()
			}
		}
		last = ev.Time
		if _, err := fmt.Fprint(out, ev.Data); err != nil {
			return err
		}
	}
}

// reorderFlags moves flags before positional arguments, so that
// `replay FILE --speed 2` works like `replay --speed 2 FILE`.
func reorderFlags(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case len(a) > 1 && a[0] == '-':
			flags = append(flags, a)
			if !containsEq(a) && i+1 < len(args) && (a == "--speed" || a == "-speed" || a == "--idle-limit" || a == "-idle-limit") {
				flags = append(flags, args[i+1])
				i++
			}
		default:
			pos = append(pos, a)
		}
	}
	return append(flags, pos...)
}

func containsEq(s string) bool {
	for i := range len(s) {
		if s[i] == '=' {
			return true
		}
	}
	return false
}
