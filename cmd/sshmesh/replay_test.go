package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestReplay(t *testing.T) {
	cast := `{"version": 2, "width": 80, "height": 24}
[0.5, "o", "hello "]
[0.7, "i", "typed"]
[2.5, "r", "100x30"]
[2.5, "o", "world\r\n"]
`
	var out bytes.Buffer
	var pauses []time.Duration
	err := replay(context.Background(), strings.NewReader(cast), &out, 2, 0, func(d time.Duration) bool {
		pauses = append(pauses, d)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "hello world\r\n" {
		t.Errorf("output %q", out.String())
	}
	if len(pauses) != 2 || pauses[0] != 250*time.Millisecond || pauses[1] != time.Second {
		t.Errorf("pauses %v, want [250ms 1s] at speed 2", pauses)
	}
	if err := replay(context.Background(), strings.NewReader("{\"version\": 2}\n[1, \"o\"]\n"), &out, 1, 0, func(time.Duration) bool { return true }); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad file: %v, want an error naming line 2", err)
	}
}
